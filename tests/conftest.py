"""Shared fixtures: tiny randomly initialised models of each family, built offline from a config, the tiny
data, and helpers that tests take as fixtures (`tiny_config`, `interrupt_after`, `live_server`) rather than
import."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
TINY_CSV = ASSETS / "tiny.csv"


def _read_tiny_texts() -> list[str]:
    with open(TINY_CSV, newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def tiny_csv() -> Path:
    """The tiny labelled data (tests/assets/tiny.csv): text and label columns."""
    return TINY_CSV


@pytest.fixture
def tiny_texts() -> list[str]:
    """The tiny data's texts, in file order; a fresh list for each test."""
    return _read_tiny_texts()


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """huggingface_hub reads HF_HUB_OFFLINE once, when imported, and session fixtures (the tiny models)
    import it before `_isolated_cache` sets the variable: without this, an unknown model name waits on
    network timeouts. Set it for the whole session, and patch the constant if it was read already."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        import huggingface_hub.constants

        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        if "datasets.config" in sys.modules:
            mp.setattr(sys.modules["datasets.config"], "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP threads that wait on
    each other made a 10-epoch tiny run take 75 s instead of 1.5 s. Results are the same either way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache or the network from a default test."""
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _words() -> list[str]:
    import re

    words = set()
    for text in _read_tiny_texts():
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    return sorted(words)


def build_tiny_bert(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_words()]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as `vocab`; a `vocab_file=` keyword is silently ignored and
    # leaves a tokenizer that maps every word to [UNK], on which no model can learn anything.
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    # Saved as a base model, as pretrained checkpoints are: the classification head is new at load time.
    BertForSequenceClassification(config).bert.save_pretrained(path)
    return path


def build_tiny_gpt2(path: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_read_tiny_texts(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.save_pretrained(path)  # no pad token, as GPT-2 ships
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def _tiny_llama_config(**overrides):
    """The tiny Llama's config: rotary positions, RMSNorm, grouped-query attention (4 query heads share 2
    key/value heads), 2 layers, hidden 32; attention dropout on, for the tests of where dropout applies."""
    from transformers import LlamaConfig

    settings = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
                    attention_dropout=0.1)
    return LlamaConfig(**{**settings, **overrides})


def build_tiny_llama(path: Path, tokenizer_from: Path, own_pad: bool) -> Path:
    """A random Llama decoder with the tiny GPT-2's byte-level BPE, which has no pad token, as many Llama
    checkpoints; with `own_pad`, a pad token of its own that is not its end-of-text token (as SmolLM2's
    tokenizer ships; it pads with `<|im_end|>`)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    if own_pad:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = _tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_gpt2):
    """`tiny_llama(own_pad=False)`: the folder of the tiny random Llama (see `build_tiny_llama`), each kind
    built once a session."""
    built: dict[bool, Path] = {}

    def folder(own_pad: bool = False) -> Path:
        if own_pad not in built:
            built[own_pad] = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_gpt2, own_pad)
        return built[own_pad]

    return folder


@pytest.fixture(scope="session")
def tiny_family(request, tmp_path_factory):
    """`tiny_family(model_type)`: the folder of a tiny random model of any family in the family table,
    built once a session: the BERT, GPT-2 and Llama fixtures above, the others from
    `tests/tiny_families.py`."""
    import tiny_families

    fixtures = {"bert": "tiny_bert", "gpt2": "tiny_gpt2"}
    built: dict[str, Path] = {}

    def folder(name: str) -> Path:
        if name not in built:
            if name in fixtures:
                built[name] = request.getfixturevalue(fixtures[name])
            elif name == "llama":
                built[name] = request.getfixturevalue("tiny_llama")()
            else:
                built[name] = tiny_families.build(name, tmp_path_factory.mktemp(f"tiny-{name}"), _words(),
                                                  request.getfixturevalue("tiny_gpt2"))
        return built[name]

    return folder


@pytest.fixture(scope="session")
def tiny_llama_config():
    """`tiny_llama_config(**overrides)`: the tiny Llama's `LlamaConfig`, for a model built in memory with
    some fields changed."""
    return _tiny_llama_config


@pytest.fixture(params=["bert", "gpt2"])
def tiny_model(request, tiny_bert, tiny_gpt2) -> Path:
    """Each family in turn."""
    return {"bert": tiny_bert, "gpt2": tiny_gpt2}[request.param]


def _tiny_config(model: Path, **train):
    """A run config for the tiny data and a tiny model: a few seconds of training; `train` overrides
    fields of the train section."""
    from tunetext import load_config

    overrides = {"data.source": str(TINY_CSV), "model.name": str(model), "model.max_length": 64,
                 "train.epochs": 3, "train.batch_size": 8, "train.learning_rate": 1e-3,
                 "train.precision": "fp32", "train.early_stopping_patience": None}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return load_config(overrides=overrides)


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(model, **train)`: a run config for the tiny data and a tiny model, a few seconds of
    training; keywords override fields of the train section."""
    return _tiny_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_bert) -> Path:
    """A finished run of the tiny BERT on the tiny data, shared by tests that only read it."""
    from tunetext import train

    out = tmp_path_factory.mktemp("runs") / "tiny-bert"
    train(_tiny_config(tiny_bert), out, progress=False)
    return out


@pytest.fixture(scope="session")
def learned_bert_run(tmp_path_factory, tiny_bert) -> Path:
    """A run of the tiny BERT on the tiny data trained long enough to learn it (test macro-F1 1.0, answers
    far from 0.5), for tests that need a model whose answers mean something; `trained_run` stays near
    chance, as 3 epochs at 1e-3 leave it."""
    from tunetext import train

    out = tmp_path_factory.mktemp("runs") / "learned-bert"
    train(_tiny_config(tiny_bert, epochs=10, learning_rate=3e-3), out, progress=False)
    return out


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _chromium_or_skip(chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER) -> tuple[Path, Path]:
    missing = [str(p) for p in (chromium, chromedriver) if not p.is_file()]
    if missing:
        why = (f"needs Debian's chromium and chromium-driver ({', '.join(missing)} missing): `make test` "
               "installs them (apt-get install -y chromium chromium-driver)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: the browser tests must run, not skip; {why}", pytrace=False)
        pytest.skip(why)
    return chromium, chromedriver


@pytest.fixture(scope="session")
def chromium_or_skip():
    """`chromium_or_skip()`: the paths of Chromium and its driver; without them the test skips, or fails
    where the environment says CI=true, so that CI never passes with its browser tests silently skipped."""
    return _chromium_or_skip


@pytest.fixture(scope="module")
def browser(chromium_or_skip):
    """A headless Chromium (selenium) for the tests that drive the web page, one per test module."""
    binary, chromedriver = chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tunetext-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=900,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(chromedriver)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def _live_server(app) -> Iterator[int]:
    """Serve `app` on a free loopback port from a thread, with the connection limits `tunetext serve` uses;
    yields the port."""
    import uvicorn

    from tunetext.serve import server_options

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           **server_options(app.state.tunetext.settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def live_server():
    """`with live_server(app) as port:` serves `app` on a free loopback port from a thread."""
    return _live_server


def _interrupt_after(monkeypatch, batches: int) -> None:
    """Send ourselves SIGINT (as Ctrl-C does) while the `batches`-th training batch is collated."""
    import importlib

    train_module = importlib.import_module("tunetext.train")  # `tunetext.train` is also the function
    calls = {"n": 0}
    real = train_module.collate

    def collate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == batches:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "collate", collate)


@pytest.fixture(scope="session")
def interrupt_after():
    """`interrupt_after(monkeypatch, batches)`: SIGINT, as Ctrl-C sends it, while the `batches`-th training
    batch is collated; undone with the monkeypatch (or its context)."""
    return _interrupt_after


@pytest.fixture
def inference_client():
    """`inference_client(base_url, api_key=None)`: huggingface_hub's own `InferenceClient` for a server of
    these tests. The hub stays offline for everything else: the tests run with HF_HUB_OFFLINE, which blocks
    the client's every request, so its HTTP session here lets requests through to loopback only."""
    import httpx2
    from huggingface_hub import InferenceClient, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    def loopback_only(request) -> None:
        if request.url.host != "127.0.0.1":
            raise RuntimeError(f"a test tried to reach {request.url}: only the test server may be reached")

    set_client_factory(lambda: httpx2.Client(event_hooks={"request": [loopback_only]}, timeout=60))
    try:
        yield lambda base_url, api_key=None: InferenceClient(base_url=base_url, api_key=api_key)
    finally:
        set_client_factory(default_client_factory)
