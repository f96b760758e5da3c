"""Corpus readers on tiny fake trees (media files that are only a header, with the real naming schemes) and
speaker-independent folds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from emollm.data.corpora import CorpusFormatError, corpus_folds, parse_iemocap_line, parse_ravdess_name, read_corpus
from emollm.data.corpora_cli import main as data_main
from emollm.data.splits import check_folds, speaker_folds

# The first bytes of each format: the readers check them (a 0-byte or renamed file is not a clip), nothing decodes.
HEADERS = {
    ".wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    ".mp4": b"\x00\x00\x00\x18ftypisom",
    ".flv": b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00",
}


def _touch(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HEADERS.get(path.suffix, b"") if data is None else data)
    return path


@pytest.fixture
def ravdess(tmp_path: Path) -> Path:
    root = tmp_path / "RAVDESS"
    for actor in range(1, 7):
        for emo in ("01", "03", "05"):
            for inten in ("01", "02") if emo != "01" else ("01",):
                _touch(root / f"Actor_{actor:02d}" / f"03-01-{emo}-{inten}-01-01-{actor:02d}.wav")
    _touch(root / "Actor_01" / "notes.wav")  # unparseable name
    _touch(root / "Actor_01" / "03-01-09-01-01-01-01.wav")  # emotion 09 does not exist
    _touch(root / "Actor_01" / ".DS_Store")  # hidden: ignored
    _touch(root / "README.txt")  # not media: ignored
    return root


def test_ravdess_fields_and_summary(ravdess):
    listing = read_corpus("ravdess", ravdess)
    assert len(listing.records) == 6 * 5
    r = next(r for r in listing.records if r.name == "03-01-05-02-01-01-04")
    assert (r.label, r.speaker) == ("angry", "actor04")
    assert r.extra["intensity"] == "strong" and r.extra["gender"] == "female" and r.extra["channel"] == "speech"
    assert parse_ravdess_name("01-02-08-01-02-02-23")["extra"]["gender"] == "male"
    reasons = {Path(s.path).name: s.reason for s in listing.skipped}
    assert set(reasons) == {"notes.wav", "03-01-09-01-01-01-01.wav"}
    assert "emotion code 09" in reasons["03-01-09-01-01-01-01.wav"]
    assert "could not parse 2 files" in listing.summary()


def test_ravdess_strict_refuses_with_file_named(ravdess):
    with pytest.raises(CorpusFormatError, match=r"03-01-09-01-01-01-01\.wav: .*emotion code 09"):
        read_corpus("ravdess", ravdess, strict=True)
    with pytest.raises(CorpusFormatError, match="no strong intensity for neutral"):
        parse_ravdess_name("03-01-01-02-01-01-01")


def test_crema_d_one_record_per_clip_with_demographics(tmp_path):
    root = tmp_path / "CREMA-D"
    _touch(root / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    _touch(root / "VideoFlash" / "1001_DFA_ANG_XX.flv")
    _touch(root / "AudioWAV" / "1002_IEO_HAP_HI.wav")
    _touch(root / "AudioWAV" / "1002_IEO_JOY_HI.wav")  # unknown emotion code
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n")
    listing = read_corpus("crema_d", root)
    assert [r.name for r in listing.records] == ["1001_DFA_ANG_XX", "1002_IEO_HAP_HI"]
    first = listing.records[0]
    assert first.path.endswith(".wav") and first.extra["other_paths"][0].endswith(".flv")
    assert (first.label, first.speaker, first.extra["sex"], first.extra["level"]) == (
        "angry",
        "1001",
        "male",
        "unspecified",
    )
    assert listing.records[1].extra["level"] == "high"
    assert "emotion code JOY" in listing.skipped[0].reason


def _iemocap(tmp_path: Path) -> Path:
    root = tmp_path / "IEMOCAP_full_release"
    emos = ["neu", "hap", "exc", "ang", "sad", "fru", "xxx"]
    for s in range(1, 6):
        dialog = f"Ses0{s}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, emo in enumerate(emos):
            gender = "FM"[i % 2]
            turn = f"{dialog}_{gender}{i:03d}"
            lines += [f"[{i}.0 - {i + 1}.5]\t{turn}\t{emo}\t[2.5000, 3.0000, 2.0000]", "C-E1:\tNeutral;\t()", ""]
            if i == 0:
                _touch(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{turn}.wav")
        if s == 1:
            lines.append("[1.0 - oops]\tSes01F_impro01_F999\tneu\t[2.5, 2.5, 2.5]")
        p = root / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(lines) + "\n")
        (p.parent / "Categorical").mkdir()
        (p.parent / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n")
    return root


def test_iemocap_speakers_classes_and_loso_folds(tmp_path):
    root = _iemocap(tmp_path)
    listing = read_corpus("iemocap", root)
    assert len(listing.records) == 5 * 7 and len(listing.skipped) == 1
    assert "Ses01F_impro01_F999" in listing.skipped[0].reason or "oops" in listing.skipped[0].reason
    r = next(r for r in listing.records if r.name == "Ses02F_impro01_M001")
    assert r.speaker == "Ses02M"  # session + the *turn's* gender, not the dialog's
    assert r.extra["session"] == 2 and r.extra["valence"] == 2.5 and r.path is None
    assert next(r for r in listing.records if r.name == "Ses02F_impro01_F000").path.endswith("Ses02F_impro01_F000.wav")
    four = read_corpus("iemocap", root, classes="4")
    assert sorted(four.label_counts()) == ["angry", "happy", "neutral", "sad"]
    assert four.label_counts()["happy"] == 10 and sum(four.filtered.values()) == 10
    folds = corpus_folds(four, "published")
    assert [f.test_groups for f in folds] == [[f"Session{i}"] for i in range(1, 6)]
    assert all(n.startswith("Ses01") for n in folds[0].test) and all(n.startswith("Ses02") for n in folds[0].val)
    check_folds(folds, {r.name: r.extra["session"] for r in four.records})
    with pytest.raises(CorpusFormatError, match="SesNNX"):
        parse_iemocap_line("[1.0 - 2.0]\tSession1_x\tneu\t[1, 2, 3]")


def test_meld_names_per_split_text_and_published_split(tmp_path):
    root = tmp_path / "MELD.Raw"
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    rows = {
        "train": '1,"Oh my God, he\u2019s lost it.",Phoebe,surprise,negative,0,0,4,7,00:20:57,00:21:00\n'
        "2,Okay.,Joey,joy,positive,0,1,4,7,0,0\n3,Hm.,Ross,bored,neutral,0,2,4,7,0,0\n",
        "dev": "1,Hi.,Monica,neutral,neutral,0,0,1,1,0,0\n",
        "test": "1,No!,Chandler,anger,negative,0,0,1,1,0,0\n",
    }
    for split, body in rows.items():
        (root / f"{split}_sent_emo.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}_sent_emo.csv").write_bytes((header + body).encode("cp1252"))
    _touch(root / "train_splits" / "dia0_utt0.mp4")
    _touch(root / "output_repeated_splits_test" / "dia0_utt0.mp4")
    listing = read_corpus("meld", root)
    names = [r.name for r in listing.records]
    assert names == ["dev_dia0_utt0", "test_dia0_utt0", "train_dia0_utt0", "train_dia0_utt1"]
    r = listing.records[2]
    assert r.label == "surprise" and r.speaker == "Phoebe" and "lost it" in r.extra["text"]
    assert "train_splits" in r.path and "output_repeated" in listing.records[1].path
    assert listing.records[0].path is None and "bored" in listing.skipped[0].reason
    (fold,) = corpus_folds(listing, "published")
    assert (fold.train, fold.val, fold.test) == (
        ["train_dia0_utt0", "train_dia0_utt1"],
        ["dev_dia0_utt0"],
        ["test_dia0_utt0"],
    )


def test_dfew_mer2023_merr_adapters(tmp_path):
    d = tmp_path / "DFEW" / "EmoLabel_DataSplit"
    for s in (1, 2):
        (d / "train(single-labeled)").mkdir(parents=True, exist_ok=True)
        (d / "test(single-labeled)").mkdir(parents=True, exist_ok=True)
        (d / "test(single-labeled)" / f"set_{s}.csv").write_text(f"video_name,label\n{s},{s}\n")
        (d / "train(single-labeled)" / f"set_{s}.csv").write_text(f"video_name,label\n{3 - s},{3 - s}\n")
    listing = read_corpus("dfew", tmp_path / "DFEW")
    assert [(r.name, r.label) for r in listing.records] == [("00001", "happy"), ("00002", "sad")]
    folds = corpus_folds(listing, "published")
    assert [f.test for f in folds] == [["00001"], ["00002"]] and folds[0].val == []
    (tmp_path / "mer").mkdir()
    (tmp_path / "mer" / "train-label.csv").write_text("name,discrete,valence\nsample_1,happy,1.5\nsample_2,sad,-2\n")
    mer = read_corpus("mer2023", tmp_path / "mer")
    assert [(r.name, r.speaker, r.extra["valence"]) for r in mer.records] == [
        ("sample_1", "sample_1", 1.5),
        ("sample_2", "sample_2", -2.0),
    ]
    (tmp_path / "list.txt").write_text("a 10 happy\nb 12 sad\n")
    assert [r.label for r in read_corpus("merr", tmp_path / "list.txt").records] == ["happy", "sad"]
    with pytest.warns(UserWarning, match="no speaker ids"):
        corpus_folds(mer, "speaker", 2, val=False)


def test_speaker_folds_never_leak_property():
    for seed in range(200):
        rng = random.Random(seed)
        n_speakers = rng.randint(2, 25)
        items = [
            (f"s{s}_c{c}", f"s{s}")
            for s in range(n_speakers)
            for c in range(rng.choice([1, 1, 2, 5, 17, rng.randint(1, 40)]))
        ]
        rng.shuffle(items)
        k = rng.randint(2, min(n_speakers, 8))
        val = k >= 3 and rng.random() < 0.7
        folds = speaker_folds(items, k, seed=seed, val=val)
        speaker_of = dict(items)
        check_folds(folds, speaker_of)  # no speaker in two splits; every clip in exactly one test fold
        for f in folds:
            assert sorted(f.train + f.val + f.test) == sorted(speaker_of)
        sizes = [len(f.test) for f in folds]
        biggest = max(sum(1 for _, s in items if s == spk) for spk in set(speaker_of.values()))
        assert max(sizes) - min(sizes) <= biggest  # greedy balance bound
        assert speaker_folds(list(reversed(items)), k, seed=seed, val=val) == folds  # order-independent


def test_speaker_folds_errors():
    with pytest.raises(ValueError, match="3 speaker-independent folds from 2 speakers"):
        speaker_folds([("a", "x"), ("b", "y")], 3)
    with pytest.raises(ValueError, match="at least 3 folds"):
        speaker_folds([("a", "x"), ("b", "y")], 2)
    with pytest.raises(ValueError, match="duplicate clip name"):
        speaker_folds([("a", "x"), ("a", "y")], 2, val=False)


def test_cli_list_and_split(ravdess, capsys, tmp_path):
    assert data_main(["list", "ravdess", str(ravdess)]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 30 and "intensity=strong" in out and "notes.wav" in err
    assert data_main(["list", "ravdess", str(ravdess), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["records"]) == 30 and len(doc["skipped"]) == 2
    assert data_main(["list", "ravdess", str(ravdess), "--strict"]) == 1
    assert "03-01-09-01-01-01-01.wav" in capsys.readouterr().err
    out_file = tmp_path / "folds.json"
    assert (
        data_main(
            ["split", "ravdess", str(ravdess), "--by", "speaker", "--folds", "3", "--json", "--out", str(out_file)]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [f["sizes"]["test"] for f in doc["folds"]] == [10, 10, 10]
    assert json.loads(out_file.read_text())["folds"] == doc["folds"]
    assert data_main(["split", "ravdess", str(ravdess), "--folds", "9"]) == 2
    assert "from 6 speakers" in capsys.readouterr().err
    assert data_main(["split", "ravdess", str(ravdess), "--by", "published"]) == 2
    assert data_main(["list", "nosuch", str(ravdess)]) == 2
