"""Configuration choice: forced configurations, persisted tuning results, the portable switch, dropping
candidates that fail or disagree, logging once, clearing the cache (driven with a fake kernel and timer)."""

import json
import logging

import pytest
import torch

from accel.kernels import triton_tuning as tuning
from accel.kernels.triton_tuning import KernelConfig, TuningKey, parse_config

KEY = TuningKey(dtype="bfloat16", head_dim=128, q_block=128, kv_block=128, layout_class="window+edge",
                seq_bucket=16, prior=False, affine=False)
CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "tuning.json"
    monkeypatch.setenv("ACCEL_TUNING_CACHE", str(path))
    for name in ("ACCEL_TRITON_CONFIG", "ACCEL_TRITON_PORTABLE", "ACCEL_TRITON_TUNE", "ACCEL_TRITON_TUNE_BUDGET_S"):
        monkeypatch.delenv(name, raising=False)
    tuning.clear_tuning_cache()
    yield path
    tuning.clear_tuning_cache()


class FakeKernel:
    """run(config) -> (out, lse); 'ms' per config for the timer; configs in 'broken' raise, in 'wrong' differ."""

    def __init__(self, ms, broken=(), wrong=()):
        self.ms, self.broken, self.wrong = ms, set(broken), set(wrong)
        self.calls = []
        g = torch.Generator().manual_seed(0)
        self.out = torch.randn(1, 8, 2, 4, generator=g)
        self.lse = torch.randn(1, 8, 2, generator=g)

    def run(self, cfg):
        self.calls.append(str(cfg))
        if str(cfg) in self.broken:
            raise RuntimeError("PassManager::run failed")
        out = self.out + (1.0 if str(cfg) in self.wrong else 0.0)
        return out, self.lse

    def timer(self, fn):
        fn()
        return self.ms.get(self.calls[-1], 5.0)


def test_parse_config_round_trip_and_errors():
    cfg = parse_config("block_m=64, block_n=32,num_warps=8,num_stages=3,tma=1,persistent=1")
    assert cfg == KernelConfig(64, 32, 8, 3, tma=True, persistent=True)
    assert parse_config(str(cfg)) == cfg
    with pytest.raises(ValueError, match="must give block_n"):
        parse_config("block_m=64")
    with pytest.raises(ValueError, match="not name=value"):
        parse_config("block_m=64,blockn=3")
    with pytest.raises(ValueError, match="power of two"):
        parse_config("block_m=48,block_n=32")
    with pytest.raises(ValueError, match="warp_spec needs tma"):
        parse_config("block_m=64,block_n=32,warp_spec=1")


def test_candidates_fit_the_layout_blocks_and_hopper_switches():
    for q_block, kv_block in ((128, 128), (64, 32), (16, 16)):
        for c in tuning.candidates(128, q_block, kv_block, tma=True, warp_spec=True):
            assert c.block_m <= q_block and c.block_n <= kv_block
    plain = tuning.candidates(128, 128, 128, tma=False, warp_spec=False)
    assert not any(c.tma or c.warp_spec for c in plain)
    hopper = tuning.candidates(128, 128, 128, tma=True, warp_spec=True)
    assert any(c.tma for c in hopper) and any(c.warp_spec for c in hopper)
    assert hopper[0] == plain[0] and not hopper[0].tma  # the untuned default is portable


def test_tuning_picks_the_fastest_persists_and_is_reused(cache, caplog):
    cands = tuning.candidates(128, 128, 128, tma=True, warp_spec=True)
    fastest = cands[2]
    fake = FakeKernel({str(fastest): 1.0, str(cands[0]): 3.0})
    with caplog.at_level(logging.INFO, logger="accel.kernels.triton_tuning"):
        cfg = tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer)
        again = tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer)
    assert cfg == fastest and again == fastest
    tried = set(fake.calls)
    assert {str(c) for c in cands} <= tried  # every candidate ran, and the persistent variant of the best
    assert str(KernelConfig(**{**fastest.__dict__, "persistent": True})) in tried
    logged = [r for r in caplog.records if "accel triton config" in r.getMessage()]
    assert len(logged) == 1 and str(fastest) in logged[0].getMessage()
    entries = json.loads(cache.read_text())["entries"]
    (key, entry), = entries.items()
    assert str(KEY) in key and "triton " in key and "kernel " in key and "cpu-interpreter" in key
    assert entry["config"] == str(fastest) and entry["ms"] == 1.0
    # a new process (memory forgotten) reads the file and runs nothing
    tuning._TUNER.memory.clear()
    fake.calls.clear()
    assert tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer) == fastest
    assert fake.calls == []
    assert tuning.chosen_configs()[key]["how"] == "cached"
    # another layout class is another key
    other = TuningKey(**{**KEY.__dict__, "layout_class": "tiles"})
    tuning.choose_config(other, CPU, fake.run, block_d=128, timer=fake.timer)
    assert len(json.loads(cache.read_text())["entries"]) == 2


def test_failing_and_disagreeing_candidates_are_dropped(cache):
    cands = tuning.candidates(128, 128, 128, tma=True, warp_spec=True)
    tma = [c for c in cands if c.tma]
    fake = FakeKernel({str(tma[0]): 0.1, str(tma[1]): 0.2, str(cands[1]): 2.0},
                      broken={str(tma[1])}, wrong={str(tma[0])})
    cfg = tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer)
    assert cfg not in (tma[0], tma[1])
    entry = tuning.chosen_configs()[tuning.full_key(KEY, CPU)]
    notes = {c: note for c, _, note in entry["candidates"]}
    assert notes[str(tma[0])].startswith("output differs")
    assert notes[str(tma[1])].startswith("failed: RuntimeError")


def test_forced_config_and_portable_switch(cache, monkeypatch):
    fake = FakeKernel({})
    monkeypatch.setenv("ACCEL_TRITON_CONFIG", "block_m=64,block_n=64,num_warps=4,num_stages=3")
    assert tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer) == KernelConfig(64, 64, 4, 3)
    assert fake.calls == [] and not cache.exists()
    monkeypatch.setenv("ACCEL_TRITON_CONFIG", "block_m=256,block_n=64")
    with pytest.raises(ValueError, match="must not exceed the layout's"):
        tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer)
    monkeypatch.delenv("ACCEL_TRITON_CONFIG")
    monkeypatch.setenv("ACCEL_TRITON_PORTABLE", "1")
    cfg = tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer)
    assert not any("tma=1" in c for c in fake.calls) and not cfg.tma


def test_tuning_off_budget_and_clear(cache, monkeypatch, capsys):
    fake = FakeKernel({})
    monkeypatch.setenv("ACCEL_TRITON_TUNE", "0")
    cfg = tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer)
    assert cfg == tuning.candidates(128, 128, 128, tma=True, warp_spec=True)[0] and fake.calls == []
    monkeypatch.delenv("ACCEL_TRITON_TUNE")
    tuning._TUNER.memory.clear()
    monkeypatch.setenv("ACCEL_TRITON_TUNE_BUDGET_S", "0")
    tuning.choose_config(KEY, CPU, fake.run, block_d=128, timer=fake.timer)
    assert len(set(fake.calls)) == 1  # the first candidate, then the budget is spent
    assert cache.exists()
    assert tuning.main(["path"]) == 0 and str(cache) in capsys.readouterr().out
    assert tuning.main(["show"]) == 0 and "1 entries" in capsys.readouterr().out
    assert tuning.main(["clear"]) == 0 and not cache.exists()
    assert tuning.chosen_configs() == {}


def test_kernel_call_records_its_configuration(cache, monkeypatch):
    """A real (interpreted) call resolves and records one configuration per key, with the layout class."""
    from accel.kernels import BlockLayout, block_sparse_attention

    q = torch.randn(1, 40, 1, 16)
    lay = BlockLayout.full(40, 40, q_block=16, kv_block=16).with_key_padding(30)
    block_sparse_attention(q, q, q, lay, backend="triton")
    (key, entry), = tuning.chosen_configs().items()
    assert "full-only+pad+edge" in key and entry["how"] == "interpreter"


def test_warp_spec_probe_verdict_is_persisted(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(tuning, "compile_probe", lambda cap: calls.append(cap) or False)
    assert tuning._warp_spec_applies(CPU, 90) is False
    assert tuning._warp_spec_applies(CPU, 90) is False  # read back from the file, not probed again
    assert calls == [90]
    (key, verdict), = json.loads(cache.read_text())["probes"].items()
    assert key.endswith("warp_spec_applies") and "triton " in key and verdict is False
    monkeypatch.setattr(tuning, "compile_probe", lambda cap: None)  # a failed probe is not remembered
    tuning.clear_tuning_cache()
    assert tuning._warp_spec_applies(CPU, 90) is False
    assert not cache.exists() or "probes" not in json.loads(cache.read_text()) or not json.loads(cache.read_text())["probes"]
