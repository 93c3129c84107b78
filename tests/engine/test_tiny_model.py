"""The embedded base model: built once, cached, and loadable by any HF user (AutoTokenizer, AutoModel)."""

import json

import torch

from trapo.data.synthetic import make_split
from trapo.models.tiny import build_char_tokenizer, build_tiny_model

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}
PRETRAIN = {"seed": 0, "n_problems": 200, "min_steps": 1, "max_steps": 2, "lr": 2e-3, "steps": 3, "batch_size": 8}


def test_build_is_cached_and_standard(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(ARCH, PRETRAIN, root=tmp_path, progress=False)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(ARCH, PRETRAIN, root=tmp_path, progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime  # not rebuilt
    assert not list(tmp_path.glob(".tmp-*"))
    assert json.loads((path / "trapo_tiny.json").read_text())["pretrain"]["steps"] == 3
    other = build_tiny_model(ARCH, {**PRETRAIN, "steps": 4}, root=tmp_path, progress=False)
    assert other != path  # a different recipe is a different model

    # what HF users load must tokenize exactly like the tokenizer we trained with (whitespace included)
    tok = AutoTokenizer.from_pretrained(path)
    ref = build_char_tokenizer()
    for p in make_split(20, 1, 4, seed=3):
        text = p.question + "\n" + p.solution
        assert tok(text).input_ids == ref(text).input_ids
        assert tok.decode(tok(text).input_ids) == text
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = torch.tensor([tok("Mia has 7 eggs.\n").input_ids])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))


def test_recipe_from_a_hydra_config_with_lists_is_the_same_model(tmp_path):
    # configs arrive as OmegaConf nodes; a list (step_weights) must hash like the plain list
    from omegaconf import OmegaConf

    pretrain = {**PRETRAIN, "max_steps": 3, "step_weights": [0.45, 0.45, 0.1]}
    plain = build_tiny_model(ARCH, pretrain, root=tmp_path, progress=False)
    node = OmegaConf.create({"arch": ARCH, "pretrain": pretrain})
    assert build_tiny_model(node.arch, node.pretrain, root=tmp_path, progress=False) == plain
