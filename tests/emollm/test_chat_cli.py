"""``emollm chat CHECKPOINT "question" [--face F.npy]`` (``emollm.apps.demo.chat_main``): answers, and one-line
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emollm.apps.demo import chat_main
from emollm.checkpoints import save_checkpoint

from .conftest import make_tiny, tiny_modalities


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("chat")
    mods = tiny_modalities()
    model, proc = make_tiny("smollm2", modalities={"audio": mods["audio"], "face": mods["face"]})
    np.save(root / "face.npy", np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32))
    return save_checkpoint(model, proc, root / "ckpt")


def _chat(capsys, *argv):
    from transformers.utils import logging

    logging.disable_progress_bar()  # as the emollm command does (emollm.cli.quiet_third_party)
    code = chat_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_answers_with_a_feature_file(ckpt, capsys):
    code, out, err = _chat(capsys, ckpt, "How does the person feel?", "--face", ckpt.parent / "face.npy",
                           "--no-stream", "--max-new-tokens", "2")  # fmt: skip
    assert code == 0 and out.endswith("\n") and "error" not in err  # a random tiny model: any text


@pytest.mark.parametrize(
    ("question", "flags", "message"),
    [
        ("<face> How does the person feel?", ["--face", "face.npy"], "the question contains <face>;"),
        ("Is the <audio> calm? And the <face>?", [], "the question contains <audio>, <face>;"),
        ("How are they?", ["--video", "face.npy"], "has no video branch (it reads audio, face); drop --video"),
        ("How does the person feel?", ["--face", "missing.npy"], "cannot read feature file"),
    ],
)
def test_bad_requests_fail_in_one_line(ckpt, capsys, question, flags, message):
    flags = [str(ckpt.parent / f) if f.endswith(".npy") else f for f in flags]
    code, out, err = _chat(capsys, ckpt, question, *flags, "--no-stream", "--max-new-tokens", "2")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("emollm chat: error: ") and message in err
    if "contains" in message:
        assert "remove" in err and "FILE" in err


def test_damaged_checkpoint_is_named_and_debug_raises(ckpt, tmp_path, capsys):
    import shutil

    bad = shutil.copytree(ckpt, tmp_path / "bad")
    (bad / "projectors.safetensors").write_bytes(b"")
    code, _, err = _chat(capsys, bad, "Hi?")
    assert code == 2 and err.count("\n") == 1 and str(bad / "projectors.safetensors") in err
    with pytest.raises(ValueError, match="truncated or damaged"):
        chat_main([str(bad), "Hi?", "--debug"])
