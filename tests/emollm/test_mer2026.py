"""MER2026 / MER-UniBench metrics on a small hand-made emotion-wheel folder (the official wheels are not shipped).

Every expected number below was worked out by hand from the wheel files written here, following the released
recipe (surface form -> format.csv -> synonym heads -> the alphabetically first head on the wheel -> its level-1
word; P and R averaged over samples, F of the averages, mean over five wheels).
"""

from __future__ import annotations

import zipfile
from fractions import Fraction
from pathlib import Path

import pytest

from emollm.scoring.mer2026 import (
    EXTRACTION_PROMPT,
    clean_judge_answer,
    ew_scores,
    extract_openset,
    hit_rate,
    load_wheels,
    parse_preference,
    prefer_scores,
    read_xlsx_rows,
    string_to_list,
)

WHEEL1 = """level1,level2,level3
Happy,Joyful,Cheerful
,,Glad
,Content,Calm
Sad,Lonely,Isolated
,Despair,Grief
Angry,Mad,Furious
"""
WHEEL2 = """level1,level2,level3
Positive,Joyful,Happy
,,Glad
,,Cheerful
,Calm,Content
Negative,Sad,Lonely
,,Grief
,,Despair
,,Isolated
,Angry,Mad
,,Furious
"""
# word -> synonyms per run (runs 1..8); a word with no entry in a run still lists itself
SYNONYMS = {
    "happy": {1: "joyous, pleased", 2: "elated"},
    "glad": {4: "pleased"},
    "sad": {1: "unhappy", 3: "down"},
    "calm": {1: "serene", 2: "peaceful"},
    "furious": {1: "enraged"},
    "grief": {},
    "lonely": {},
    "cheerful": {},
    "content": {},
    "joyful": {},
    "isolated": {},
    "despair": {},
    "angry": {},
    "mad": {},
}
FORMAT = {
    "happy": "happy,happiness,happily",
    "pleased": "pleased,pleasure",
    "unhappy": "unhappy,unhappiness",
    "serene": "serene,serenity",
    "grief": "grief,grieving,grieve",
    "sad": "sad,sadness",
    "calm": "calm,calmness",
    "lonely": "lonely,loneliness",
    "furious": "furious,fury",
    "glad": "glad,gladness",
    "angry": "angry,anger",
}


def write_wheels(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wheel1.csv").write_text(WHEEL1)
    (root / "wheel2.csv").write_text(WHEEL2)
    for k in (3, 4, 5):
        (root / f"wheel{k}.csv").write_text(WHEEL1)
    header = ",".join(f"word_run{r},synonym_run{r}" for r in range(1, 9))
    rows = []
    for word, runs in SYNONYMS.items():
        rows.append(",".join(f'{word},"{runs.get(r, "")}"' for r in range(1, 9)))
    (root / "synonym.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (root / "format.csv").write_text("name,format\n" + "".join(f'{n},"{f}"\n' for n, f in FORMAT.items()))
    return root


@pytest.fixture
def wheels(tmp_path):
    return load_wheels(write_wheels(tmp_path / "wheel"))


GOLD = {"s1": "['happiness', 'sad']", "s2": "['neutral']", "s3": "[calm]", "s4": "grieving, lonely"}
PRED = {"s1": "[pleased, furious]", "s3": "[]", "s4": "[unhappiness, serene]"}


def test_word_to_wheel_mapping(wheels):
    assert wheels.map_label("happiness", "wheel1") == "happy"
    # "pleased" is a synonym of happy (run 1) and glad (run 4): sorted heads [glad, happy], glad comes first
    assert wheels.raw_mapping["pleased"] == {"happy", "glad"}
    assert wheels.map_label("pleased", "wheel1") == "happy" and wheels.map_label("pleased", "wheel2") == "positive"
    assert wheels.map_label("serene", "wheel1") == "happy"  # serene -> calm, under Happy/Content
    assert wheels.map_label("neutral", "wheel1") == ""  # not in format.csv: dropped
    assert wheels.map_label("elated", "wheel1") == ""  # a synonym, but no format.csv row: dropped
    # level 2: a level-1 word maps to its alphabetically first child; others to their level-2 word
    assert wheels.map_label("happy", "wheel1", "level2") == "content"
    assert wheels.map_label("glad", "wheel1", "level2") == "joyful"
    assert wheels.map_label("sad", "wheel1", "level2") == "despair"


def test_ew_scores_by_hand(wheels):
    r = ew_scores(GOLD, PRED, wheels)
    # wheel1 (and its copies 3-5): s1 G={happy,sad} P={happy,angry}: 1/2, 1/2; s2 skipped; s3 P empty: 0, 0;
    # s4 G={sad} P={sad,happy}: 1/2, 1. -> P = 1/3, R = 1/2, F = 2/5
    w1 = r["per_wheel"]["wheel1"]
    assert (w1["precision"], w1["recall"], w1["f1"]) == pytest.approx((1 / 3, 1 / 2, 2 / 5))
    assert w1["n"] == 3 and w1["skipped"] == 1
    # wheel2: s1 G={positive,negative} P={positive,negative}: 1, 1; s3: 0, 0; s4 G={negative} P={negative,positive}:
    # 1/2, 1 -> P = 1/2, R = 2/3, F = 4/7
    w2 = r["per_wheel"]["wheel2"]
    assert (w2["precision"], w2["recall"], w2["f1"]) == pytest.approx((1 / 2, 2 / 3, 4 / 7))
    expected_p = (4 * Fraction(1, 3) + Fraction(1, 2)) / 5
    expected_r = (4 * Fraction(1, 2) + Fraction(2, 3)) / 5
    expected_f = (4 * Fraction(2, 5) + Fraction(4, 7)) / 5  # the mean of the per-wheel F, not F of the means
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx(
        (float(expected_p), float(expected_r), float(expected_f))
    )
    assert r["missing"] == 1 and r["n_gold"] == 4 and r["level"] == "level1"
    assert set(r["wheel_source"]["files"]) == {"format.csv", "synonym.csv", *(f"wheel{k}.csv" for k in range(1, 6))}
    # level 2 on wheel1: s1 G={content,despair} P={joyful,mad}: 0; s3 G={content} P={}: 0; s4 G={despair,lonely}
    # P={despair,content}: 1/2, 1/2
    r2 = ew_scores(GOLD, PRED, wheels, level="level2")
    assert (r2["per_wheel"]["wheel1"]["precision"], r2["per_wheel"]["wheel1"]["recall"]) == pytest.approx(
        (1 / 6, 1 / 6)
    )


def test_all_zero_and_errors(wheels):
    r = ew_scores({"a": "[happy]"}, {"a": "[sad]"}, wheels)
    assert r["f1"] == 0.0  # P + R = 0 is guarded (MERTools), not a division by zero
    with pytest.raises(ValueError, match="not in the gold set"):
        ew_scores({"a": "[happy]"}, {"b": "[sad]"}, wheels)
    with pytest.raises(ValueError, match="level must be"):
        ew_scores({"a": "[happy]"}, {}, wheels, level="level3")


def test_hit_rate_by_hand(wheels):
    gold = {"x1": "happy", "x2": "neutral", "x3": "grief", "x4": "angry"}
    pred = {"x1": "[glad, sad]", "x3": "[calm]"}
    r = hit_rate(gold, pred, wheels)
    # every wheel: x1 hit 1, x2 skipped (neutral maps to nothing), x3 0 (calm is positive), x4 missing: 0
    for w in ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5"):
        assert r["per_wheel"][w] == {"hit_rate": pytest.approx(1 / 3), "n": 3}
    assert r["hit_rate"] == pytest.approx(1 / 3) and r["missing"] == 2


def test_missing_wheel_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_wheels(tmp_path / "nope")
    root = write_wheels(tmp_path / "w")
    (root / "wheel3.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"no wheel3.xlsx \(or wheel3.csv\).*does not ship them"):
        load_wheels(root)
    root = write_wheels(tmp_path / "w2")
    (root / "synonym.csv").write_text((root / "synonym.csv").read_text().replace("furious,", "fuming,", 1))
    with pytest.raises(ValueError, match="word_run1 'fuming' is on no wheel"):
        load_wheels(root)


def _xlsx(path: Path, rows: list[list[str]]) -> Path:
    """A minimal .xlsx written by hand: shared strings, one sheet, blank cells left out (as Excel does)."""
    strings = sorted({c for r in rows for c in r if c})
    idx = {s: i for i, s in enumerate(strings)}
    sheet_rows = []
    for i, r in enumerate(rows, start=1):
        cells = "".join(f'<c r="{chr(65 + j)}{i}" t="s"><v>{idx[c]}</v></c>' for j, c in enumerate(r) if c)
        sheet_rows.append(f'<row r="{i}">{cells}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/workbook.xml", f'<workbook {ns} {rel}><sheets><sheet name="S" sheetId="1" r:id="rId1"/>'
                   "</sheets></workbook>")  # fmt: skip
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Target="worksheets/sheet1.xml" Type="worksheet"/></Relationships>',
        )
        shared = "".join(f"<si><t>{s}</t></si>" for s in strings)
        z.writestr("xl/sharedStrings.xml", f"<sst {ns}>{shared}</sst>")
        rows_xml = "".join(sheet_rows)
        z.writestr("xl/worksheets/sheet1.xml", f"<worksheet {ns}><sheetData>{rows_xml}</sheetData></worksheet>")
    return path


def test_xlsx_files_read_like_their_csv(tmp_path):
    rows = [line.split(",") for line in WHEEL1.strip().splitlines()]
    path = _xlsx(tmp_path / "wheel1.xlsx", rows)
    got = read_xlsx_rows(path)
    assert got[0] == {"level1": "Happy", "level2": "Joyful", "level3": "Cheerful"}
    assert got[1] == {"level1": "", "level2": "", "level3": "Glad"}
    root = write_wheels(tmp_path / "x")
    (root / "wheel1.csv").unlink()
    _xlsx(root / "wheel1.xlsx", rows)
    assert load_wheels(root).wheel_map == load_wheels(write_wheels(tmp_path / "y")).wheel_map
    (tmp_path / "bad.xlsx").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .xlsx"):
        read_xlsx_rows(tmp_path / "bad.xlsx")


def test_list_parsing_and_judge_cleaning():
    assert string_to_list("[happy, 'sad', \"calm\"]") == ["happy", "sad", "calm"]
    assert string_to_list("") == [] and string_to_list(None) == [] and string_to_list(["a"]) == ["a"]
    assert clean_judge_answer("Output: [happy,\n sad]") == "[happy, sad]"
    assert clean_judge_answer("输出：[开心]") == "[开心]"
    assert EXTRACTION_PROMPT.endswith("Input: {reason}; Output: ") and "\n" not in EXTRACTION_PROMPT


def test_extraction_batches_and_parses():
    seen = []

    def judge(prompts):
        seen.append(len(prompts))
        return ["Output: [Happy, relieved]" if "smiles" in p else "[]" for p in prompts]

    reasons = {f"n{i}": ("He smiles." if i % 2 else "Nothing.") for i in range(11)}
    out = extract_openset(reasons, judge, batch_size=4)
    assert seen == [4, 4, 3]
    assert out["n1"] == ["happy", "relieved"] and out["n0"] == []
    with pytest.raises(ValueError, match="returned 1 answers for 2"):
        extract_openset({"a": "x", "b": "y"}, lambda p: ["[]"])


def test_preference_parsing_and_score():
    assert parse_preference("A1 is better") == "a1"
    assert parse_preference("I think a2, not a1") == "a2"  # the earliest occurrence
    assert parse_preference("same") == "same" and parse_preference("no idea") == "same"
    gold = {"a": "a1", "b": "a2", "c": "same", "d": "a2", "e": "a1", "f": "a2"}
    pred = {"a": "a1 is better", "b": "I think a2", "c": "a2", "d": "same", "e": "The answer: a2 because a1", "f": "a2"}
    r = prefer_scores(gold, pred)
    # kept a, b, d, e, f; true [a1,a2,a2,a1,a2], predicted [a1,a2,a1(same),a2,a2]
    # a1: tp 1, fp 1, fn 1 -> F1 1/2 (support 2); a2: tp 2, fp 1, fn 1 -> F1 2/3 (support 3)
    assert r["weighted_f1"] == pytest.approx((0.5 * 2 + 2 / 3 * 3) / 5)
    assert r["accuracy"] == pytest.approx(3 / 5) and r["n"] == 5 and r["dropped_same"] == 1 and r["pred_same"] == 1
    sklearn = pytest.importorskip("sklearn.metrics")
    t, p = [0, 1, 1, 0, 1], [0, 1, 0, 1, 1]
    assert r["weighted_f1"] == pytest.approx(sklearn.f1_score(t, p, average="weighted"))
    with pytest.raises(ValueError, match=r"got \['tie'\]"):
        prefer_scores({"a": "tie"}, {})


def test_sentiment_parsing_and_prompt():
    from emollm.scoring.mer2026 import SENTIMENT_PROMPT, parse_sentiment

    assert parse_sentiment("positive") == "positive" and parse_sentiment("Output: negative\n") == "negative"
    assert parse_sentiment(" neutral ") == "neutral"
    for bad in ("Positive", "positive.", "it is positive", "", None, "[happy]"):
        assert parse_sentiment(bad) is None, bad  # the release compares the cleaned answer exactly
    # the released f-string is continued with a backslash onto lines indented 12 spaces: 13 spaces between parts
    parts = SENTIMENT_PROMPT.split(" " * 13)
    assert len(parts) == 7 and parts[0] == "Please act as an expert in the field of emotions."
    assert parts[2].endswith("[positive, negative, neutral]") and parts[-1] == "Input: {reason}; Output: "
    assert SENTIMENT_PROMPT.format(reason="[joyful]").endswith("Input: [joyful]; Output: ")


def test_sentiment_scores_by_hand_and_against_scikit_learn():
    """Gold 0 dropped; positive vs not; an invalid answer is wrong in our score and neutral (= not positive) in the
    release's; weighted F1 and accuracy equal scikit-learn's on the same two-class vectors."""
    from sklearn.metrics import accuracy_score, f1_score

    from emollm.scoring.mer2026 import sentiment_scores

    gold = {"a": 1.2, "b": -0.4, "c": 0.0, "d": 2.0, "e": -1.0, "f": 0.6}
    pred = {"a": "positive", "b": "neutral", "c": "positive", "d": None, "e": "positive"}  # f missing
    r = sentiment_scores(gold, pred)
    assert (r["n"], r["dropped_zero"], r["invalid"], r["missing"]) == (5, 1, 2, 1)
    y_true = [1, 0, 1, 0, 1]  # a b d e f
    ours = [1, 0, 0, 1, 0]  # d, f invalid -> the wrong class (0 for a true 1)
    released = [1, 0, 0, 1, 0]  # invalid -> neutral -> 0
    assert r["accuracy"] == pytest.approx(accuracy_score(y_true, ours)) == pytest.approx(2 / 5)
    assert r["weighted_f1"] == pytest.approx(f1_score(y_true, ours, average="weighted"))
    assert r["as_released"]["weighted_f1"] == pytest.approx(f1_score(y_true, released, average="weighted"))
    # where an invalid answer's gold is negative, the release's neutral happens to be right; ours is wrong
    r = sentiment_scores({"x": -1.0, "y": 1.0}, {"x": None, "y": "positive"})
    assert r["accuracy"] == 0.5 and r["as_released"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="every gold sentiment score is 0"):
        sentiment_scores({"x": 0.0}, {})
    with pytest.raises(ValueError, match="not in the gold set"):
        sentiment_scores({"x": 1.0}, {"z": "positive"})
