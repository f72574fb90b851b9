"""Checkpoint loading: sharded or single-file safetensors in, clear errors for broken ones."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwenlab.hf import CheckpointError, load_pretrained

from .conftest import random_hf_model


@pytest.fixture
def checkpoint(tmp_path):
    model = random_hf_model(seed=0, tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    return tmp_path


def _rewrite(folder, edit):
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path):
    model = random_hf_model(seed=1)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    ids = torch.randint(0, 320, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(tmp_path)(ids).logits, model(ids).logits,
                                   atol=1e-4, rtol=0)


def test_tied_checkpoint_has_no_lm_head_tensor_and_still_loads(tmp_path):
    random_hf_model(seed=2, tie_word_embeddings=True).save_pretrained(tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    model = load_pretrained(tmp_path)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_dtype_can_be_chosen_at_load_time(checkpoint):
    model = load_pretrained(checkpoint, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_missing_tensor_is_named(checkpoint):
    _rewrite(checkpoint, lambda s: s.pop("model.layers.1.self_attn.k_proj.bias"))
    with pytest.raises(CheckpointError, match="missing tensors: model.layers.1.self_attn.k_proj.bias"):
        load_pretrained(checkpoint)


def test_unexpected_tensor_is_named(checkpoint):
    _rewrite(checkpoint, lambda s: s.update({"model.layers.0.mlp.experts.0.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="unexpected tensors: model.layers.0.mlp.experts.0.weight"):
        load_pretrained(checkpoint)


def test_misshaped_tensor_is_named_with_both_shapes(checkpoint):
    _rewrite(checkpoint, lambda s: s.update({"model.norm.weight": torch.ones(65)}))
    with pytest.raises(CheckpointError, match=r"model.norm.weight has shape \(65,\), the config needs \(64,\)"):
        load_pretrained(checkpoint)


def test_config_that_disagrees_with_the_weights_is_caught(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["intermediate_size"] = 200
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="gate_proj.weight has shape"):
        load_pretrained(checkpoint)


def test_missing_config_is_reported(checkpoint):
    (checkpoint / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_pretrained(checkpoint)


def test_pickled_weights_are_refused_without_unpickling(tmp_path, checkpoint):
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*safetensors only"):
        load_pretrained(checkpoint)


def test_truncated_safetensors_file_is_reported(checkpoint):
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_pretrained(checkpoint)


def test_index_that_lists_a_missing_shard_is_reported(tmp_path):
    random_hf_model(seed=1).save_pretrained(tmp_path, max_shard_size="20KB")
    victim = sorted(tmp_path.glob("*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"lists {victim.name}, which is not in"):
        load_pretrained(tmp_path)


def test_non_qwen2_checkpoint_is_refused(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "llama"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="expected a Qwen2 config"):
        load_pretrained(checkpoint)


def test_a_path_that_is_neither_folder_nor_repo_id_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="not a hub repo id"):
        load_pretrained(tmp_path / "nowhere" / "at" / "all")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_pretrained(tmp_path / "file.txt")


def test_repo_ids_go_to_the_hub_with_only_config_and_safetensors(monkeypatch, checkpoint):
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(checkpoint)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = load_pretrained("Qwen/Qwen2.5-0.5B-Instruct", revision="main")
    assert calls == [("Qwen/Qwen2.5-0.5B-Instruct", "main", ["*.json", "*.safetensors"])]
    assert model.config.hidden_size == 64
