"""Self-describing checkpoints: round trip, wrong backbone, damaged folders, merged export."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from emollm.backbones import get_backbone
from emollm.checkpoints import export_merged, load_model, save_checkpoint
from emollm.model.generation import chat
from emollm.model.lora import LoraSettings, TrainableSpec, apply_lora, set_trainable

from .conftest import make_tiny, tiny_tokenizer
from .test_modeling import sample


def _trained_tiny(backbone="llama2"):
    model, proc = make_tiny(backbone)
    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    apply_lora(model, lora, get_backbone(backbone).lora_targets)
    spec = TrainableSpec(llm="lora")
    set_trainable(model, spec)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(**proc([sample()]).model_inputs()).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model, proc, lora, spec


PROBE = None


def _logits(model, proc):
    """Logits on one fixed probe sample (same features every call)."""
    global PROBE
    if PROBE is None:
        g = torch.Generator().manual_seed(123)
        PROBE = sample(name="probe")
        PROBE.features = {k: torch.randn(v.shape, generator=g) for k, v in PROBE.features.items()}
    with torch.no_grad():
        return model(**proc([PROBE]).model_inputs()).logits


@pytest.mark.parametrize("backbone", ["llama2", "llama3"])
def test_round_trip_identical_outputs(tmp_path, backbone):
    torch.manual_seed(1)
    model, proc, lora, spec = _trained_tiny(backbone)
    ref_logits = _logits(model, proc)
    question = [sample(name="q"), sample(face=False, name="q2")]
    ref_answers = chat(model, proc, question, max_new_tokens=5)
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec, run_config={"lr": 1e-2})
    files = {p.name for p in out.iterdir()}
    assert {
        "checkpoint.json",
        "emollm_config.json",
        "projectors.safetensors",
        "adapter_model.safetensors",
        "adapter_config.json",
        "processor_config.json",
        "tokenizer.json",
        "run_config.json",
        "llm",
    } <= files
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["backbone"] == backbone and meta["lora"]["r"] == 4
    loaded, lproc = load_model(out)
    assert torch.equal(_logits(loaded, lproc), ref_logits)
    assert chat(loaded, lproc, question, max_new_tokens=5) == ref_answers


def test_wrong_backbone_is_refused(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    with pytest.raises(ValueError, match="trained for backbone 'llama2', not 'mistral'"):
        load_model(out, backbone="mistral")


def test_base_from_another_family_is_refused(tmp_path):
    from transformers import AutoModelForCausalLM

    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec, save_base=False)
    assert not (out / "llm").exists()
    with pytest.raises(FileNotFoundError, match="pass llm_path"):
        load_model(out)
    mistral = get_backbone("mistral").text_config(n_layers=2, hidden=64, vocab_size=1100)
    AutoModelForCausalLM.from_config(mistral).save_pretrained(tmp_path / "mistral")
    with pytest.raises(ValueError, match="is a 'mistral' model, but backbone 'llama2' expects 'llama'"):
        load_model(out, llm_path=tmp_path / "mistral")
    wider = get_backbone("llama2").text_config(n_layers=2, hidden=128, vocab_size=1100)
    AutoModelForCausalLM.from_config(wider).save_pretrained(tmp_path / "wider")
    with pytest.raises(ValueError, match="hidden_size: checkpoint 64 vs base 128"):
        load_model(out, llm_path=tmp_path / "wider")


def test_damaged_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an emollm checkpoint"):
        load_model(tmp_path)
    model, proc, lora, spec = _trained_tiny("llama2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    from safetensors.torch import load_file, save_file

    state = load_file(str(out / "projectors.safetensors"))
    state.pop(next(iter(state)))
    save_file(state, str(out / "projectors.safetensors"))
    with pytest.raises(ValueError, match="does not fit this model: missing"):
        load_model(out)
    (out / "emollm_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(out)


def test_round_trip_with_unsorted_modalities_and_trained_type_embeddings(tmp_path):
    from .conftest import tiny_modalities

    mods = tiny_modalities()
    model, proc = make_tiny("smollm2", modalities={m: mods[m] for m in ("video", "face", "audio")})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # every parameter, type embeddings included, is now "trained"
    model.eval()
    ref = _logits(model, proc)
    loaded, lproc = load_model(save_checkpoint(model, proc, tmp_path / "ckpt"))
    assert torch.equal(_logits(loaded, lproc), ref)


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
    model, proc, lora, spec = _trained_tiny("llama2")
    save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_merged_export_matches_adapter_model(tmp_path):
    model, proc, lora, spec = _trained_tiny("qwen2")
    ref = _logits(model, proc)
    ckpt = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    merged = export_merged(ckpt, tmp_path / "merged")
    assert not (merged / "adapter_model.safetensors").exists()
    loaded, lproc = load_model(merged)
    torch.testing.assert_close(_logits(loaded, lproc), ref, rtol=1e-4, atol=1e-4)


def test_checkpoint_from_tokenizer_roundtrip_keeps_placeholders(tmp_path):
    model, proc = make_tiny("smollm2")
    out = save_checkpoint(model, proc, tmp_path / "ckpt")
    _, lproc = load_model(out)
    assert lproc.placeholder_ids == proc.placeholder_ids
    assert len(lproc.tokenizer) == len(proc.tokenizer) > len(tiny_tokenizer("smollm2"))


def test_export_cli_merges(tmp_path):
    from emollm.checkpoints import cli_main

    model, proc, lora, spec = _trained_tiny("llama2")
    ref = _logits(model, proc)
    ckpt = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec)
    assert cli_main([str(ckpt), str(tmp_path / "merged"), "--merge"]) == 0
    loaded, lproc = load_model(tmp_path / "merged")
    torch.testing.assert_close(_logits(loaded, lproc), ref, rtol=1e-4, atol=1e-4)
    assert cli_main([str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2


# ------------------------------------------------------------------------------------- reliability (hostile inputs)
@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A tiny smollm2 checkpoint with its base in llm/ and a run_config.json; tests copy it before changing it."""
    torch.manual_seed(0)
    model, proc = make_tiny("smollm2")
    return save_checkpoint(model, proc, tmp_path_factory.mktemp("pristine") / "ckpt", run_config={"lr": 1e-3})


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_json(file, **changes):
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


def _export(capsys, *argv):
    from emollm.checkpoints import cli_main

    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_never_destroys_data(tmp_path, capsys, pristine):
    ckpt = _copy(pristine, tmp_path / "ckpt")
    before = sorted(p.name for p in ckpt.iterdir())
    (tmp_path / "link").symlink_to(ckpt)
    refused = {  # target -> what the one-line message says; refused with and without --overwrite
        ckpt: "is the input",
        tmp_path / "link": "is the input",
        ckpt / "sub": "is inside the input",
        ckpt / "llm": "is inside the input",
        tmp_path: "contains the input",
    }
    for target, why in refused.items():
        for extra in ([], ["--overwrite"]):
            code, out, err = _export(capsys, ckpt, target, *extra)
            assert code == 2 and out == "" and err.count("\n") == 1, (target, err)
            assert why in err and str(target) in err and "choose a folder outside the input" in err
    assert sorted(p.name for p in ckpt.iterdir()) == before and (ckpt / "run_config.json").is_file()

    mine = tmp_path / "notes.txt"
    mine.write_text("precious")
    for extra in ([], ["--overwrite"]):
        code, _, err = _export(capsys, ckpt, mine, *extra)
        assert code == 2 and f"{mine} is a file, not a folder" in err and err.count("\n") == 1
    assert mine.read_text() == "precious"

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    code, _, err = _export(capsys, ckpt, folder)
    assert code == 2 and f"{folder} already exists and is not empty; pass --overwrite" in err
    code, _, err = _export(capsys, ckpt, folder, "--overwrite")
    assert code == 2 and "is not an emollm checkpoint, so --overwrite will not replace it" in err
    assert (folder / "keep.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _export(capsys, ckpt, empty)[0] == 0
    assert json.loads((empty / "run_config.json").read_text()) == {"lr": 1e-3}  # carried into the export
    code, _, err = _export(capsys, ckpt, empty)
    assert code == 2 and "pass --overwrite" in err
    assert _export(capsys, ckpt, empty, "--overwrite")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "empty", "folder", "link", "notes.txt"]

    with pytest.raises(FileExistsError, match="is the input"):
        _export(capsys, ckpt, ckpt, "--debug")
    with pytest.raises(FileExistsError, match="is the input"):
        export_merged(ckpt, ckpt)
    with pytest.raises(FileExistsError, match="is a file, not a checkpoint folder"):
        save_checkpoint(*make_tiny("smollm2"), mine)
    assert mine.read_text() == "precious"


def test_export_refuses_a_target_holding_the_base_llm(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    model, proc, lora, spec = _trained_tiny("llama2")
    ckpt = save_checkpoint(model, proc, tmp_path / "ckpt", lora=lora, trainable=spec, save_base=False)
    base = tmp_path / "models" / "base"
    AutoModelForCausalLM.from_config(model.config.hf_text_config()).save_pretrained(base)
    code, _, err = _export(capsys, ckpt, tmp_path / "models", "--llm-path", base, "--overwrite")
    assert code == 2 and "contains the input" in err and (base / "config.json").is_file()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("meta", "checkpoint.json names backbone 'llama3' but .*emollm_config.json names 'smollm2'"),
        ("both", "chat format 'chatml' is not the one backbone 'llama3' uses \\('llama3'\\)"),
        ("both+format", "placeholder '<\\|emo_audio\\|>' is not the one backbone 'llama3' uses"),
        ("dims", "the saved LLM has the dimensions of backbone 'smollm2' .*, not of 'llama2'"),
        ("tokenizer", "tokenizer in .* lacks \\['<\\|im_start\\|>', '<\\|im_end\\|>'\\]"),
    ],
)
def test_checkpoint_naming_another_backbone_is_refused(tmp_path, capsys, pristine, edit, message):
    """Same transformers class (llama3, llama2 and smollm2 are all LlamaForCausalLM) is not the same backbone."""
    from emollm.backbones import get_backbone

    ckpt = _copy(pristine, tmp_path / "ckpt")
    meta, config = ckpt / "checkpoint.json", ckpt / "emollm_config.json"
    if edit == "meta":
        _edit_json(meta, backbone="llama3")
    elif edit.startswith("both"):
        fmt = {"chat_format": "llama3"} if edit == "both+format" else {}
        _edit_json(meta, backbone="llama3", **fmt)
        _edit_json(config, backbone="llama3", **fmt)
    elif edit == "dims":  # a real smollm2's shape under the name llama2 (same placeholders, own chat format)
        ref = get_backbone("smollm2").reference_config
        dims = {k: ref[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
        text_config = {**json.loads(config.read_text())["text_config"], **dims}
        _edit_json(meta, backbone="llama2", chat_format="llama2")
        _edit_json(config, backbone="llama2", chat_format="llama2", text_config=text_config)
    else:  # tokenizer files of another backbone copied over
        other = save_checkpoint(*make_tiny("llama2"), tmp_path / "other")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(other / name, ckpt / name)
    with pytest.raises(ValueError, match=message):
        load_model(ckpt)
    code, out, err = _export(capsys, ckpt, tmp_path / "out")
    assert code == 2 and out == "" and err.count("\n") == 1 and str(ckpt) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        ("truncate", "projectors.safetensors", "is truncated or damaged"),
        ("empty", "projectors.safetensors", "is truncated or damaged"),
        ("truncate", "llm/model.safetensors", "is truncated or damaged"),
        ("garbage", "checkpoint.json", "is not valid JSON"),
        ("list", "checkpoint.json", "holds a JSON list, not an object"),
        ("version", "checkpoint.json", "version is 'one', not an integer"),
        ("garbage", "emollm_config.json", "is not valid JSON"),
        ("backbone", "emollm_config.json", "unknown backbone 'gpt-9'"),
        ("garbage", "tokenizer.json", "is not valid JSON"),
    ],
)
def test_damaged_checkpoint_fails_in_one_line_naming_the_file(tmp_path, capsys, pristine, damage, file, message):
    from emollm.apps.analyze import main as analyze_main

    ckpt = _copy(pristine, tmp_path / "ckpt")
    target = ckpt / file
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-7])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "garbage":
        target.write_text('{"format": ')
    elif damage == "list":
        target.write_text("[1]")
    elif damage == "version":
        _edit_json(target, version="one")
    else:
        _edit_json(target, backbone="gpt-9")
    with pytest.raises(ValueError, match=message) as info:
        load_model(ckpt)
    assert str(target) in str(info.value) and "re-save the checkpoint" in str(info.value)
    code, out, err = _export(capsys, ckpt, tmp_path / "out")
    assert code == 2 and out == "" and err.count("\n") == 1 and str(target) in err and "Traceback" not in err
    clip = tmp_path / "clip.txt"
    clip.write_text("I am so happy today.")
    assert analyze_main([str(clip), "--checkpoint", str(ckpt), "--subtitle", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and message.split(" ")[-1] in err
