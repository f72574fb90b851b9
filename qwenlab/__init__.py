"""qwenlab: a Qwen2.5-class language model rebuilt from its parts, one concept per module."""

from . import checks, env, hf
from .config import ConfigError, QwenConfig
from .generate import generate
from .kv_cache import KVCache, kv_cache_bytes
from .model import CausalLMOutput, QwenForCausalLM, QwenModel
from .tokenizer import load_course_tokenizer, load_qwen25_tokenizer

__version__ = "0.1.0"

__all__ = ["checks", "env", "hf", "CausalLMOutput", "ConfigError", "KVCache", "QwenConfig",
           "QwenForCausalLM", "QwenModel", "generate", "kv_cache_bytes", "load_course_tokenizer",
           "load_qwen25_tokenizer"]
