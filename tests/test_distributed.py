"""Distributed runs: two gloo processes give the one-process result, and a run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import adaptive_sde
from adaptive_sde._bench.problems import GBM_ITO
from adaptive_sde.diffusion import VPSDE, GaussianMixture
from adaptive_sde.distributed import (
    ShardStore,
    plan_shards,
    sample_distributed,
    solve_ensemble,
)

N_PATHS, PATH_SHARD = 60, 8  # 8 shards: ranks 0 and 1 take 4 each
N_SAMPLES, SAMPLE_SHARD = 48, 16
TS = torch.linspace(0, 1, 3, dtype=torch.float64)
MIXTURE = GaussianMixture.ring()
SDE = VPSDE()


def _ensemble(out=None, on_shard=None):
    return solve_ensemble(
        GBM_ITO.make_sde(),
        torch.ones(1, dtype=torch.float64),
        TS,
        N_PATHS,
        seed=11,
        shard_size=PATH_SHARD,
        out=out,
        on_shard=on_shard,
        rtol=1e-2,
        atol=1e-3,
    )


def _samples(out=None):
    return sample_distributed(
        MIXTURE.score_fn(SDE), SDE, (2,), N_SAMPLES, seed=5, shard_size=SAMPLE_SHARD, out=out
    )


def _worker(rank: int, world: int, init: str, job: str, folder: str, crash_after: int) -> None:
    """One process of a gloo group: runs ``job`` and leaves what it saw in ``folder``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        computed: list[int] = []

        def on_shard(shard, was_computed):
            if was_computed:
                computed.append(shard.index)
            if rank == 1 and len(computed) == crash_after:
                os._exit(3)  # killed part-way: no clean-up, no goodbye to the group

        out = os.path.join(folder, "store") if job != "memory" else None
        if job == "sample":
            result = _samples(out)
        else:
            result = _ensemble(out, on_shard)
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump({"computed": computed or result.computed, "reused": result.reused}, f)
        if rank == 0:
            torch.save({"outputs": result.outputs, "stats": result.stats}, f"{folder}/result.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(tmp: Path, job: str, crash_after: int = -1) -> None:
    init = f"file://{tmp / f'rendezvous-{os.urandom(4).hex()}'}"
    mp.spawn(_worker, args=(2, init, job, str(tmp), crash_after), nprocs=2, join=True)


def _one_process(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _assert_same(outputs, reference):
    assert outputs.keys() == reference.keys()
    for name in reference:
        assert torch.equal(outputs[name], reference[name]), name


@pytest.mark.parametrize("job", ["memory", "store", "sample"])
def test_two_gloo_processes_give_the_one_process_result(tmp_path, job):
    reference = _one_process(_samples if job == "sample" else _ensemble)
    _spawn(tmp_path, job)
    got = torch.load(tmp_path / "result.pt", weights_only=False)
    _assert_same(got["outputs"], reference.outputs)
    assert got["stats"].keys() == reference.stats.keys()
    for name, value in reference.stats.items():  # summed across ranks
        if name != "seconds":
            assert got["stats"][name] == value, name
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    total = N_SAMPLES // SAMPLE_SHARD if job == "sample" else len(plan_shards(N_PATHS, PATH_SHARD))
    assert sorted(ranks[0]["computed"] + ranks[1]["computed"]) == list(range(total))
    if job == "memory":
        assert reference.outputs["ys"].shape == (len(TS), N_PATHS, 1)


def test_a_rerun_after_a_rank_dies_computes_only_the_missing_shards(tmp_path):
    reference = _one_process(_ensemble)
    with pytest.raises(mp.ProcessExitedException):
        _spawn(tmp_path, "store", crash_after=1)
    store = tmp_path / "store"
    done_before = sorted(int(p.name[6:12]) for p in store.glob("shard-*.pt"))
    all_shards = list(range(len(plan_shards(N_PATHS, PATH_SHARD))))
    assert 0 < len(done_before) < len(all_shards)
    assert not (store / ShardStore.MANIFEST).exists()

    _spawn(tmp_path, "resume")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    computed = sorted(ranks[0]["computed"] + ranks[1]["computed"])
    reused = sorted(ranks[0]["reused"] + ranks[1]["reused"])
    assert reused == done_before
    assert sorted(computed + reused) == all_shards
    got = torch.load(tmp_path / "result.pt", weights_only=False)
    _assert_same(got["outputs"], reference.outputs)
    manifest = json.loads((store / ShardStore.MANIFEST).read_text())
    assert manifest["stats"]["samples"] == N_PATHS
    assert len(manifest["shards"]) == len(all_shards)


def test_a_store_refuses_shards_of_other_settings(tmp_path):
    _one_process(lambda: _ensemble(out=tmp_path))
    with pytest.raises(ValueError, match=r"other settings: seed \(11 there, 12 in this run\)"):
        solve_ensemble(
            GBM_ITO.make_sde(),
            torch.ones(1, dtype=torch.float64),
            TS,
            N_PATHS,
            seed=12,  # another seed: these shards are not this run's
            shard_size=PATH_SHARD,
            out=tmp_path,
            rtol=1e-2,
            atol=1e-3,
        )


def test_arguments_that_would_break_reproducibility_are_refused():
    with pytest.raises(ValueError, match="bm and sample_ids"):
        solve_ensemble(GBM_ITO.make_sde(), torch.ones(1), TS, 4, seed=0, bm=object())
    with pytest.raises(TypeError, match="seed must be an int"):
        sample_distributed(MIXTURE.score_fn(SDE), SDE, (2,), 4, seed=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y0 must have shape"):
        solve_ensemble(GBM_ITO.make_sde(), torch.ones(3, 1), TS, 4, seed=0)


def test_the_sample_gmm_command_under_torchrun(tmp_path):
    args = ["sample-gmm", "--samples", "64", "--shard-size", "16", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    run = subprocess.run(
        [*torchrun, "-m", "adaptive_sde", *args, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "samples/s" in run.stdout and "2 processes" in run.stdout
    single = subprocess.run(
        [sys.executable, "-m", "adaptive_sde", *args, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = (torch.load(tmp_path / d / "samples.pt") for d in ("two", "one"))
    assert two.shape == (64, 2) and torch.equal(two, one)


def test_shards_solve_each_sample_as_one_whole_batch_would():
    # Sample i's noise depends on (seed, i) only: solving in shards of 8 gives what one solve of
    # all the samples gives (to rounding: a row's place in a batch can change the last bit of
    # the controller's powers, E**-r and (E_prev / E)**p, and so of a later step's end, which
    # moves the solution by up to a few 1e-7 of itself; the decisions, counted in nfe, are the
    # same).
    y0 = torch.linspace(0.5, 1.5, N_PATHS, dtype=torch.float64)[:, None]
    options = {"rtol": 1e-2, "atol": 1e-3}
    sharded = solve_ensemble(
        GBM_ITO.make_sde(), y0, TS, N_PATHS, seed=4, shard_size=PATH_SHARD, **options
    )
    whole = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=4, **options)
    torch.testing.assert_close(sharded.outputs["ys"], whole.ys, rtol=1e-6, atol=0)
    assert torch.equal(sharded.outputs["nfe"], whole.stats.nfe)
    assert sharded.stats["nfe"] == whole.stats.total_nfe
    assert sharded.stats["samples"] == N_PATHS and sharded.stats["failed"] == 0


def test_without_gathering_rank_0_gets_statistics_only():
    result = solve_ensemble(
        GBM_ITO.make_sde(), torch.ones(1, dtype=torch.float64), TS, 16, seed=0, gather=False
    )
    assert result.outputs is None and result.stats["samples"] == 16
