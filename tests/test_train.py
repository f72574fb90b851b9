"""The pretraining loop learns, resumes bit for bit, and never trusts a damaged checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from qwenlab import QwenConfig, QwenForCausalLM
from qwenlab import train as T

VOCAB = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is as fast as two, and does not wait on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0) -> QwenForCausalLM:
    torch.manual_seed(seed)
    return QwenForCausalLM(QwenConfig.tiny(vocab_size=VOCAB, hidden_size=32,
                                           intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=1))


def pattern_stream(length: int = 37, repeats: int = 100) -> torch.Tensor:
    """A random 37-token pattern repeated: a sequence a model can learn to predict exactly."""
    pattern = torch.randint(0, VOCAB, (length,), generator=torch.Generator().manual_seed(1))
    return pattern.repeat(repeats)


def config(**overrides) -> T.TrainConfig:
    fields = dict(max_steps=12, batch_size=4, seq_len=32, lr=1e-2, min_lr=1e-3,
                  warmup_steps=3, eval_every=4, eval_batches=2)
    return T.TrainConfig(**{**fields, **overrides})


# --------------------------------------------------------------------------- schedule

def test_cosine_lr_warms_up_linearly_to_lr():
    lrs = [T.cosine_lr(s, max_steps=100, warmup=10, lr=1.0, min_lr=0.1) for s in range(10)]
    assert lrs == pytest.approx([(s + 1) / 10 for s in range(10)])


def test_cosine_lr_decays_along_a_cosine_to_min_lr():
    def lr(s):
        return T.cosine_lr(s, max_steps=110, warmup=10, lr=1.0, min_lr=0.1)

    assert lr(10) == pytest.approx(1.0)                      # top of the cosine
    assert lr(60) == pytest.approx(0.55)                     # halfway: (lr + min_lr) / 2
    assert lr(35) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(110) == pytest.approx(0.1)                     # ends at min_lr, not 0
    assert lr(500) == pytest.approx(0.1)                     # and stays there
    decay = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))     # never rises after warmup


def test_cosine_lr_without_warmup_starts_at_lr():
    assert T.cosine_lr(0, max_steps=50, warmup=0, lr=3e-3, min_lr=3e-4) == pytest.approx(3e-3)


# --------------------------------------------------------------------------- batching

def test_random_batches_are_seeded_windows_of_the_stream():
    stream = torch.arange(1000)
    a = next(T.random_batches(stream, 4, 16, torch.Generator().manual_seed(0)))
    b = next(T.random_batches(stream, 4, 16, torch.Generator().manual_seed(0)))
    assert a.shape == (4, 16)
    assert torch.equal(a, b)
    assert torch.equal(a - a[:, :1], torch.arange(16).expand(4, 16))   # contiguous windows


def test_sequential_batches_tile_the_stream_in_order():
    batches = T.sequential_batches(torch.arange(100), batch_size=2, seq_len=10)
    assert len(batches) == 5
    assert torch.equal(torch.cat(batches).flatten(), torch.arange(100))


def test_tokenize_texts_puts_eos_after_every_document():
    class CharTokenizer:
        eos_token_id = 0

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[ord(c) for c in t] for t in texts]}

    stream = T.tokenize_texts(["ab", "c"], CharTokenizer())
    assert stream.tolist() == [97, 98, 0, 99, 0]


# --------------------------------------------------------------------------- training

def test_loss_falls_on_a_repeating_pattern():
    stream = pattern_stream()
    history = T.train(tiny_model(), stream, config(max_steps=40, eval_every=10),
                      eval_stream=stream[:1000], progress=False)
    assert history.train_loss[0] > math.log(VOCAB) - 0.5     # starts near uniform guessing
    assert history.final_eval_loss < 1.0                      # the pattern is learned
    assert history.eval_loss == sorted(history.eval_loss, reverse=True)
    assert history.tokens[-1] == 40 * 4 * 32
    assert history.step == list(range(1, 41))


def test_training_is_deterministic():
    stream = pattern_stream()
    a = T.train(tiny_model(), stream, config(), progress=False)
    b = T.train(tiny_model(), stream, config(), progress=False)
    assert a.train_loss == b.train_loss


def test_resuming_from_a_checkpoint_gives_the_identical_next_loss(tmp_path):
    stream = pattern_stream()
    full = T.train(tiny_model(), stream, config(), eval_stream=stream[:1000], progress=False)

    T.train(tiny_model(), stream, config(), eval_stream=stream[:1000], checkpoint_dir=tmp_path,
            stop_at=6, progress=False)                        # "interrupted" after 6 steps
    resumed_model = tiny_model(seed=123)                      # weights will be overwritten
    resumed = T.train(resumed_model, stream, config(), eval_stream=stream[:1000],
                      checkpoint_dir=tmp_path, progress=False)

    # bit for bit: same floats, not just close ones
    assert resumed.train_loss[6] == full.train_loss[6]
    assert resumed.train_loss == full.train_loss
    assert resumed.eval_loss == full.eval_loss


def test_a_checkpoint_holds_no_pickles_and_keeps_the_tied_head_tied(tmp_path):
    model = tiny_model()
    T.train(model, pattern_stream(), config(), checkpoint_dir=tmp_path, progress=False)
    path = T.latest_checkpoint(tmp_path)
    assert path.name == "ckpt_000012.safetensors"
    assert "model.lm_head.weight" not in load_file(path)      # stored once, as the embedding
    restored = T.load_checkpoint(path)["model"]
    assert restored.lm_head.weight is restored.model.embed_tokens.weight
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   restored.state_dict().values()))


def test_resuming_with_another_train_config_is_refused(tmp_path):
    T.train(tiny_model(), pattern_stream(), config(), checkpoint_dir=tmp_path, stop_at=3,
            progress=False)
    with pytest.raises(T.CheckpointError, match="lr"):
        T.train(tiny_model(), pattern_stream(), config(lr=5e-3), checkpoint_dir=tmp_path,
                progress=False)


# --------------------------------------------------------------------------- damaged files

@pytest.fixture
def saved(tmp_path):
    """A folder with one good checkpoint at step 4, and the run's pieces to write more."""
    model = tiny_model()
    cfg = config(keep_checkpoints=3)
    T.train(model, pattern_stream(), cfg, checkpoint_dir=tmp_path, stop_at=4, progress=False)
    return tmp_path, model, cfg


def test_a_truncated_checkpoint_gives_an_error_naming_the_file(saved):
    folder, _, _ = saved
    path = folder / "ckpt_000004.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(T.CheckpointError, match="ckpt_000004.safetensors.*truncated or corrupt"):
        T.load_checkpoint(path)


def test_flipped_bytes_in_a_checkpoint_are_detected(saved):
    folder, _, _ = saved
    path = folder / "ckpt_000004.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF                                        # inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(T.CheckpointError, match="ckpt_000004.safetensors is corrupt.*SHA-256"):
        T.load_checkpoint(path)


def test_a_failed_write_never_replaces_the_last_good_checkpoint(saved, monkeypatch):
    folder, model, cfg = saved
    good = (folder / "ckpt_000004.safetensors").read_bytes()
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def crash_halfway(tensors, filename, metadata=None):      # e.g. the disk fills up
        real_save(tensors, filename, metadata)
        with open(filename, "rb+") as f:
            f.truncate(f.seek(0, 2) // 2)

    monkeypatch.setattr(safetensors.torch, "save_file", crash_halfway)
    optimizer = T.make_optimizer(model, cfg)
    with pytest.raises(T.CheckpointError, match="truncated or corrupt"):
        T.save_checkpoint(folder, model, optimizer, 4, cfg, T.History(), torch.Generator())
    with pytest.raises(T.CheckpointError):
        T.save_checkpoint(folder, model, optimizer, 8, cfg, T.History(), torch.Generator())

    assert sorted(p.name for p in folder.iterdir()) == ["ckpt_000004.safetensors"]  # no debris
    assert (folder / "ckpt_000004.safetensors").read_bytes() == good
    assert T.latest_checkpoint(folder).name == "ckpt_000004.safetensors"


def test_resume_skips_a_damaged_newer_checkpoint_with_a_warning(saved):
    folder, _, cfg = saved
    (folder / "ckpt_000008.safetensors").write_bytes(b"\x00" * 100)   # a torn write
    with pytest.warns(UserWarning, match="ckpt_000008.safetensors"):
        assert T.latest_checkpoint(folder).name == "ckpt_000004.safetensors"


def test_old_checkpoints_are_pruned_only_after_the_new_one_is_written(tmp_path):
    cfg = config(checkpoint_every=2, keep_checkpoints=2)
    T.train(tiny_model(), pattern_stream(), cfg, checkpoint_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000010.safetensors",
                                                          "ckpt_000012.safetensors"]
