"""emollm.aus.openface: reading OpenFace 2 CSVs and the FeatureExtraction adapter."""

from __future__ import annotations

import os
import stat
import sys
import textwrap

import numpy as np
import pytest

from emollm.aus.openface import OPENFACE_C_AUS, OPENFACE_R_AUS, NoFaceError, OpenFaceRunner, au_code, read_openface_csv

from .openface_gen import C_AUS, HEADER, R_AUS, Plant, make_columns, write_columns, write_openface_csv

# Verbatim OpenFace 2 layout (3 frames; the header and values carry the leading spaces OpenFace writes).
REAL = textwrap.dedent(
    """\
    frame, face_id, timestamp, confidence, success, AU01_r, AU02_r, AU04_r, AU05_r, AU06_r, AU07_r, AU09_r, AU10_r, \
AU12_r, AU14_r, AU15_r, AU17_r, AU20_r, AU23_r, AU25_r, AU26_r, AU45_r, AU01_c, AU02_c, AU04_c, AU05_c, AU06_c, \
AU07_c, AU09_c, AU10_c, AU12_c, AU14_c, AU15_c, AU17_c, AU20_c, AU23_c, AU25_c, AU26_c, AU28_c, AU45_c
    1, 0, 0.000, 0.98, 1, 0.37, 0.00, 1.02, 0.00, 0.00, 0.84, 0.00, 0.51, 0.00, 0.23, 0.00, 0.41, 0.00, 0.12, \
0.00, 0.00, 0.08, 0.00, 0.00, 1.00, 0.00, 0.00, 1.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, \
0.00, 0.00
    2, 0, 0.040, 0.97, 1, 0.42, 0.10, 1.45, 0.00, 0.00, 1.10, 0.00, 0.66, 0.00, 0.20, 0.00, 0.50, 0.00, 0.30, \
0.00, 0.00, 0.00, 0.00, 0.00, 1.00, 0.00, 0.00, 1.00, 0.00, 1.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, \
1.00, 0.00
    3, 0, 0.080, 0.00, 0, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, \
0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, \
0.00, 0.00
    """
)


def test_generator_matches_openface_layout():
    assert R_AUS == OPENFACE_R_AUS and C_AUS == OPENFACE_C_AUS
    assert REAL.splitlines()[0].split(",") == [HEADER[0], *(f" {h}" for h in HEADER[1:])]


def test_reads_real_openface_layout(tmp_path):
    p = tmp_path / "clip.csv"
    p.write_text(REAL)
    seq = read_openface_csv(p)
    assert seq.n_frames == 3 and seq.n_valid == 2
    assert list(seq.valid) == [True, True, False]  # success == 0 row kept, marked invalid
    assert list(seq.frames) == [1, 2, 3]
    np.testing.assert_allclose(seq.timestamps, [0.0, 0.04, 0.08])
    assert list(seq.intensity) == list(OPENFACE_R_AUS)  # names stripped, AU order
    assert list(seq.presence) == list(OPENFACE_C_AUS)
    assert "AU28" in seq.presence and "AU28" not in seq.intensity
    np.testing.assert_allclose(seq.intensity["AU04"], [1.02, 1.45, 0.0])
    assert seq.face_id == 0 and seq.source == p and seq.name == "clip"
    assert seq.active_aus(1) == ["AU04", "AU07", "AU28"]  # AU28 (presence only) counts via AU28_c


def test_low_confidence_and_failed_frames_invalid_but_kept(tmp_path):
    p = write_openface_csv(tmp_path / "c.csv", 20, success={3: 0}, confidence={5: 0.5, 6: 0.8})
    seq = read_openface_csv(p)
    assert seq.n_frames == 20
    assert not seq.valid[3] and not seq.valid[5] and seq.valid[6]  # >= min_confidence is valid
    assert read_openface_csv(p, min_confidence=0.9).valid.sum() == 18 - 1  # 0.8 row now out too


def test_all_failed_is_no_face(tmp_path):
    p = write_openface_csv(tmp_path / "c.csv", 10, success=dict.fromkeys(range(10), 0))
    with pytest.raises(NoFaceError, match=r"c\.csv.*no face detected: all 10 frames failed"):
        read_openface_csv(p)
    p = write_openface_csv(tmp_path / "d.csv", 10, confidence=dict.fromkeys(range(10), 0.3))
    with pytest.raises(ValueError, match="no face detected"):  # NoFaceError is a ValueError
        read_openface_csv(p)


def test_missing_meta_columns_default_to_valid(tmp_path):
    p = write_openface_csv(tmp_path / "c.csv", 8, drop=["success", "confidence", "frame", "timestamp", "face_id"])
    seq = read_openface_csv(p)
    assert seq.valid.all() and list(seq.frames) == list(range(1, 9)) and np.isnan(seq.timestamps).all()


def test_missing_au_columns(tmp_path):
    p = write_openface_csv(tmp_path / "c.csv", 8, drop=["AU14_c", "AU05_r"])
    seq = read_openface_csv(p)
    assert "AU14" not in seq.presence and "AU14" in seq.intensity
    assert "AU05" not in seq.intensity and "AU05" in seq.presence


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", r"empty file"),
        ("\n\n", r"empty file"),
        (", ".join(HEADER) + "\n", r"header but no frames"),
        ("frame, face_id, timestamp, confidence, success\n1, 0, 0.0, 0.9, 1\n", r":1: no action-unit columns"),
        ("frame, AU01_r, AU01_c\n1, 0.5, 0\n2, 0.5\n", r":3: row has 2 fields, header has 3"),
        ("frame, AU01_r, AU01_c\n1, 0.5, 0\n2, high, 1\n", r":3: column 'AU01_r' has non-numeric value 'high'"),
        # OpenFace writes finite numbers only: an infinity anywhere, or a frame number that is not a whole number
        # >= 0, means a damaged file (refused with file:line), while a NaN AU value marks the frame invalid.
        ("frame, AU01_r, AU01_c\n1, 0.5, 0\n2, inf, 1\n", r":3: column 'AU01_r' has infinite value 'inf'"),
        ("frame, AU01_r, AU01_c\n1, -Infinity, 0\n", r":2: column 'AU01_r' has infinite value '-Infinity'"),
        ("frame, confidence, AU01_r\n1, inf, 0.5\n", r":2: column 'confidence' has infinite value 'inf'"),
        ("frame, timestamp, AU01_r\n1, 0.0, 0.5\n2, INF, 0.5\n", r":3: column 'timestamp' has infinite"),
        ("frame, AU01_r\n1, 0.5\nnan, 0.5\n", r":3: column 'frame' has 'nan', not a frame number"),
        ("frame, AU01_r\n1.5, 0.5\n", r":2: column 'frame' has '1.5', not a frame number"),
        ("frame, AU01_r\n-3, 0.5\n", r":2: column 'frame' has '-3', not a frame number"),
    ],
)
def test_bad_csv_errors_name_file_and_line(tmp_path, text, pattern):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.csv" + (pattern if pattern.startswith(":") else ".*" + pattern)):
        read_openface_csv(p)


def test_missing_file_and_binary_garbage(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_openface_csv(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ValueError, match=r"bin\.csv: not a UTF-8"):
        read_openface_csv(p)


def test_nan_values_make_frame_invalid(tmp_path):
    cols = make_columns(6)
    cols["AU01_r"] = cols["AU01_r"].copy()
    cols["AU01_r"][2] = np.nan
    p = write_columns(tmp_path / "c.csv", cols)
    assert "nan" in p.read_text()
    seq = read_openface_csv(p)
    assert list(seq.valid) == [True, True, False, True, True, True]


def test_nan_timestamp_reads_as_unknown(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("frame, timestamp, AU01_r\n1, 0.0, 0.5\n2, nan, 0.5\n")
    seq = read_openface_csv(p)
    assert seq.valid.all() and np.isnan(seq.timestamps[1]) and list(seq.frames) == [1, 2]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1, 1.5, "0.8", True])
def test_min_confidence_must_be_in_unit_range(tmp_path, value):
    p = write_openface_csv(tmp_path / "c.csv", 5)
    with pytest.raises(ValueError, match="min_confidence must be a number between 0 and 1"):
        read_openface_csv(p, value)
    assert read_openface_csv(p, np.float32(0.5)).n_valid == 5 and read_openface_csv(p, 0).n_valid == 5


def test_multi_face_needs_face_id(tmp_path):
    cols = make_columns(6, [Plant({"AU12": 2.0}, 1, width=0)])
    cols["face_id"] = np.array([0, 1, 0, 1, 0, 1])
    p = write_columns(tmp_path / "multi.csv", cols)
    with pytest.raises(ValueError, match=r"2 faces .*face_id"):
        read_openface_csv(p)
    seq = read_openface_csv(p, face_id=1)
    assert seq.n_frames == 3 and seq.face_id == 1 and list(seq.frames) == [2, 4, 6]
    with pytest.raises(ValueError, match="no rows with face_id 7"):
        read_openface_csv(p, face_id=7)


def test_au_code():
    assert [au_code(x) for x in ("AU1", "au01", " AU01_r", "AU28_c", "AU45")] == [
        "AU01",
        "AU01",
        "AU01",
        "AU28",
        "AU45",
    ]
    with pytest.raises(ValueError, match="not an action unit"):
        au_code("smile")


# ------------------------------------------------------------------------------------------------- OpenFaceRunner


def test_runner_missing_binary_has_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
    runner = OpenFaceRunner()
    with pytest.raises(FileNotFoundError, match=r"'FeatureExtraction' not found on PATH.*install OpenFace 2"):
        runner.find_binary()
    with pytest.raises(FileNotFoundError, match="install OpenFace 2"):
        runner.run(tmp_path / "v.mp4", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="at that path"):
        OpenFaceRunner(binary=tmp_path / "nope" / "FeatureExtraction").find_binary()


def test_runner_command_construction(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
    cmd = OpenFaceRunner().command("/data/v 1.mp4", tmp_path / "out")
    assert cmd == ["FeatureExtraction", "-f", "/data/v 1.mp4", "-out_dir", str(tmp_path / "out"), "-aus"]
    cmd = OpenFaceRunner(binary="/opt/OpenFace/build/bin/FeatureExtraction", extra_args=["-au_static"]).command(
        "v.avi", "o"
    )
    assert cmd == ["/opt/OpenFace/build/bin/FeatureExtraction", "-f", "v.avi", "-out_dir", "o", "-aus", "-au_static"]
    monkeypatch.setenv("OPENFACE_BIN", "/env/FeatureExtraction")
    assert OpenFaceRunner().command("v.mp4", "o")[0] == "/env/FeatureExtraction"
    assert OpenFaceRunner.output_csv("/data/sample_00000023.mp4", "o") == type(tmp_path)("o/sample_00000023.csv")


FAKE = """#!{python}
import shutil, sys
args = sys.argv[1:]
video, out = args[args.index("-f") + 1], args[args.index("-out_dir") + 1]
assert "-aus" in args
if "fail" in video:
    sys.stderr.write("could not open video\\n"); sys.exit(1)
if "noface" in video:
    sys.exit(0)
import pathlib
shutil.copy({csv!r}, pathlib.Path(out) / (pathlib.Path(video).stem + ".csv"))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shebang script as fake binary")
def test_runner_with_fake_binary(tmp_path, monkeypatch):
    src = write_openface_csv(tmp_path / "src.csv", 30, [Plant({"AU06": 2.0, "AU12": 2.0, "AU14": 2.0}, 12)])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "FeatureExtraction"
    exe.write_text(FAKE.format(python=sys.executable, csv=str(src)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
    runner = OpenFaceRunner()
    assert runner.find_binary() == exe
    for name in ("clip.mp4", "fail.mp4", "noface.mp4"):
        (tmp_path / name).write_bytes(b"\x00")
    out = runner.run(tmp_path / "clip.mp4", tmp_path / "out")
    assert out == tmp_path / "out" / "clip.csv"
    assert read_openface_csv(out).n_frames == 30
    assert runner.run(tmp_path / "clip.mp4", tmp_path / "out") == out  # cached
    with pytest.raises(RuntimeError, match=r"(?s)exit 1.*could not open video"):
        runner.run(tmp_path / "fail.mp4", tmp_path / "out")
    with pytest.raises(RuntimeError, match="wrote no"):
        runner.run(tmp_path / "noface.mp4", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such video"):
        runner.run(tmp_path / "missing.mp4", tmp_path / "out")
