"""The qwenlab command line, run as a learner would run it."""

from __future__ import annotations

import io
import subprocess
import sys

import torch

from qwenlab import QwenConfig, QwenForCausalLM, cli
from qwenlab.hf import save_pretrained


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwenlab.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_kv_cache_prints_the_72b_example_as_a_table():
    out = run("kv-cache", "--model", "qwen2.5-72b", "--context", "131072", "--batch", "1",
              "--dtype", "bf16")
    assert out.returncode == 0, out.stderr
    assert "42,949,672,960 bytes = 40.00 GiB" in out.stdout
    assert "327,680 bytes = 2 x 80 x 8 x 128 x 2" in out.stdout
    assert "320.00 GiB" in out.stdout  # the same cache with multi-head attention
    assert "fits 80 GB GPU   no" in out.stdout


def test_kv_cache_fits_a_small_model_on_a_small_gpu():
    table = cli.kv_cache_table("qwen2.5-0.5b", context=4096, batch=1, dtype="bf16")
    assert "fits 16 GB GPU   yes" in table


def test_kv_cache_refuses_an_unknown_dtype(capsys):
    assert cli.main(["kv-cache", "--dtype", "fp12"]) == 2
    assert "unknown dtype 'fp12'" in capsys.readouterr().err


def test_doctor_reports_versions_device_and_scale(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for key in ("torch:", "transformers:", "device:", "SCALE:", "SCALE does:", "data:"):
        assert key in out


def test_chat_streams_a_reply_from_a_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = QwenConfig.preset("qwen2.5-0.5b", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=1)
    save_pretrained(QwenForCausalLM(config), tmp_path)
    out = run("chat", "--model", str(tmp_path), "--max-new-tokens", "5", "--temperature", "0",
              stdin="Hello!\nAnd again?\n")
    assert out.returncode == 0, out.stderr
    # random weights: the text is noise, but each of the two replies ends with a newline
    assert out.stdout.count("\n") >= 2


def test_stream_reply_writes_what_it_returns():
    from qwenlab.tokenizer import load_qwen25_tokenizer

    torch.manual_seed(0)
    config = QwenConfig.preset("qwen2.5-0.5b", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=1)
    model = QwenForCausalLM(config).eval()
    buffer = io.StringIO()
    reply = cli.stream_reply(model, load_qwen25_tokenizer(), [{"role": "user", "content": "hi"}],
                             max_new_tokens=6, temperature=0.0, top_p=None, out=buffer)
    assert buffer.getvalue() == reply + "\n"
