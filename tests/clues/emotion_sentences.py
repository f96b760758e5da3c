"""A small handmade set of clearly emotional English sentences, four per MERR label (36 in all).

Written once, before the text-emotion mapping was designed, and not tuned afterwards; used to measure (not train)
:mod:`emollm.clues.text_emotion`. Each entry is ``(sentence, label)``.
"""

from __future__ import annotations

EMOTION_SENTENCES: tuple[tuple[str, str], ...] = (
    ("I passed the exam, this is wonderful!", "happy"),
    ("We're getting married next spring and I couldn't be happier.", "happy"),
    ("Best birthday ever, thank you all so much!", "happy"),
    ("I love this song, it makes me want to dance.", "happy"),
    ("How dare you lie to me!", "angry"),
    ("I'm furious, they cancelled my flight again without telling anyone.", "angry"),
    ("Get out of my house right now, I've had enough of you!", "angry"),
    ("Stop touching my stuff, it drives me crazy!", "angry"),
    ("My dog died yesterday and I can't stop crying.", "sad"),
    ("I miss my mother so much since she passed away.", "sad"),
    ("Nobody came to my party, I feel so lonely.", "sad"),
    ("I lost my job today and I feel completely hopeless.", "sad"),
    ("I'm terrified, there's someone breaking into the house!", "fear"),
    ("Please don't hurt me, I'm so scared.", "fear"),
    ("The plane is shaking and I think we're going to crash.", "fear"),
    ("I heard footsteps behind me in the dark alley and froze in panic.", "fear"),
    ("Wow, I did not expect that at all!", "surprise"),
    ("What? You're here? I thought you were in Japan!", "surprise"),
    ("No way, you won the lottery? That's unbelievable!", "surprise"),
    ("Oh my god, I can't believe they actually showed up!", "surprise"),
    ("I keep worrying that my son won't get home safely tonight.", "worried"),
    ("The rent is due tomorrow and I don't know how we'll pay it.", "worried"),
    ("I'm anxious about the biopsy results, what if it's bad news?", "worried"),
    ("She hasn't answered her phone all day, I'm getting nervous.", "worried"),
    ("People like him are beneath me, honestly.", "contempt"),
    ("Oh please, as if your opinion ever mattered to anyone.", "contempt"),
    ("What a pathetic little man, he can't even tie his own shoes.", "contempt"),
    ("I don't even bother talking to people that ignorant.", "contempt"),
    ("I'm not sure that's really true.", "doubt"),
    ("Hmm, are you certain that's how it happened? It sounds unlikely.", "doubt"),
    ("I doubt he'll keep his promise this time.", "doubt"),
    ("I'm skeptical, that deal sounds too good to be real.", "doubt"),
    ("The meeting is at three o'clock in room twelve.", "neutral"),
    ("The train leaves from platform four.", "neutral"),
    ("Please put the files on the desk.", "neutral"),
    ("The report has twenty pages and two appendices.", "neutral"),
)
