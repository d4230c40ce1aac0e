"""Faults of resumable distributed jobs: kill, corrupt, change the problem, rerun.

Every rerun either gives what one uninterrupted run gives, bit for bit, or refuses with an error
that names what differs and what to do. Single process: the store and the resumption are the
same code on every rank (tests/test_distributed.py runs two gloo processes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import adaptive_sde.distributed._run as run_module
import adaptive_sde.distributed._shards as shards_module
from adaptive_sde._bench.problems import GBM_ITO, GeometricBrownianMotion
from adaptive_sde.diffusion import VPSDE, GaussianMixture, SubVPSDE
from adaptive_sde.distributed import (
    DamagedFileWarning,
    ShardStore,
    digest,
    run_shards,
    sample_distributed,
    solve_ensemble,
)
from adaptive_sde.distributed._shards import Shard, ShardRecord

N_PATHS, PATH_SHARD = 24, 8  # three shards
N_SAMPLES, SAMPLE_SHARD = 16, 8  # two shards
TS = torch.linspace(0, 1, 3, dtype=torch.float64)
Y0 = torch.linspace(0.5, 1.5, N_PATHS, dtype=torch.float64)[:, None]


def ensemble(out=None, *, sde=None, y0=Y0, ts=TS, seed=11, on_shard=None, **options):
    options = {"rtol": 1e-2, "atol": 1e-3, **options}
    return solve_ensemble(
        sde if sde is not None else GBM_ITO.make_sde(),
        y0,
        ts,
        N_PATHS,
        seed=seed,
        shard_size=PATH_SHARD,
        out=out,
        on_shard=on_shard,
        **options,
    )


def samples(out=None, *, score_fn=None, sde=None, seed=5, **options):
    sde = sde if sde is not None else VPSDE()
    score_fn = score_fn if score_fn is not None else GaussianMixture.ring().score_fn(sde)
    return sample_distributed(
        score_fn,
        sde,
        (2,),
        N_SAMPLES,
        seed=seed,
        shard_size=SAMPLE_SHARD,
        out=out,
        rtol=0.05,
        **options,
    )


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted runs, without a store."""
    return {"ensemble": ensemble(), "samples": samples()}


def assert_same(result, expected):
    assert result.outputs.keys() == expected.outputs.keys()
    for name, tensor in expected.outputs.items():
        assert torch.equal(result.outputs[name], tensor), name
    for name, value in expected.stats.items():
        if name != "seconds":
            assert result.stats[name] == value, name


def shard_file(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:06d}.pt"


def no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedFileWarning)
        return fn()


# --- kill and rerun -------------------------------------------------------------------------


def test_a_run_killed_after_its_first_shard_resumes_to_the_uninterrupted_result(
    tmp_path, reference
):
    def die(shard, computed):
        if shard.index == 1:
            raise KeyboardInterrupt  # killed between shards

    with pytest.raises(KeyboardInterrupt):
        ensemble(tmp_path, on_shard=die)
    assert sorted(p.name for p in tmp_path.glob("shard-*.pt")) == [
        "shard-000000.pt",
        "shard-000001.pt",
    ]
    resumed = no_warnings(lambda: ensemble(tmp_path))
    assert resumed.reused == [0, 1] and resumed.computed == [2]
    assert_same(resumed, reference["ensemble"])


def test_a_lost_shard_is_computed_again_and_the_rest_reused(tmp_path, reference):
    ensemble(tmp_path)
    shard_file(tmp_path, 1).unlink()
    resumed = no_warnings(lambda: ensemble(tmp_path))
    assert resumed.computed == [1] and resumed.reused == [0, 2]
    assert_same(resumed, reference["ensemble"])


def test_a_rerun_with_equal_but_new_objects_reuses_every_shard(tmp_path, reference):
    # The digests hash values, not identities: fresh SDE, y0, score function of the same values
    # find their shards (as a rerun in a new process does).
    ensemble(tmp_path / "ensemble")
    again = ensemble(tmp_path / "ensemble", sde=GBM_ITO.make_sde(), y0=Y0.clone())
    assert again.computed == [] and again.reused == [0, 1, 2]
    assert_same(again, reference["ensemble"])
    samples(tmp_path / "samples")
    sde = VPSDE()
    again = samples(tmp_path / "samples", score_fn=GaussianMixture.ring().score_fn(sde), sde=sde)
    assert again.computed == [] and again.reused == [0, 1]
    assert_same(again, reference["samples"])


def test_a_write_killed_half_way_leaves_no_shard_and_its_temporary_file_is_removed(
    tmp_path, monkeypatch, reference
):
    real_save = torch.save

    def save_half_then_die(payload, file):
        real_save(payload, file)
        if isinstance(file, (str, os.PathLike)):
            Path(file).write_bytes(Path(file).read_bytes()[:10])
        else:
            file.truncate(10)
        raise KeyboardInterrupt  # killed in the middle of writing the first shard

    monkeypatch.setattr(shards_module.torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        ensemble(tmp_path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # no shard, no temporary file
    assert_same(no_warnings(lambda: ensemble(tmp_path)), reference["ensemble"])


def test_temporary_files_of_killed_runs_are_removed_and_others_kept(tmp_path, reference):
    ensemble(tmp_path)
    shard_file(tmp_path, 2).unlink()
    whole = shard_file(tmp_path, 0).read_bytes()
    stale = [  # a process killed by SIGKILL leaves its temporary file behind
        tmp_path / "shard-000002.pt.4242-0badcafe.tmp",
        tmp_path / "shard-000002.pt.4243.tmp",  # this module's former naming
        tmp_path / "manifest.json.4242-0badcafe.tmp",
    ]
    for path in stale:
        path.write_bytes(whole[: len(whole) // 2])
    others = [tmp_path / "notes.tmp", tmp_path / "shard-000002.pt.backup"]
    for path in others:
        path.write_text("the user's")
    resumed = no_warnings(lambda: ensemble(tmp_path))
    assert resumed.computed == [2]
    assert_same(resumed, reference["ensemble"])
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in others)


def test_shards_and_manifest_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        real_fsync(fd)

    def replace(src, dst):
        assert re.fullmatch(ShardStore.TEMPORARY, Path(src).name), src
        assert Path(src).parent == Path(dst).parent  # same directory: the rename is atomic
        events.append(f"replace {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(shards_module.os, "fsync", fsync)
    monkeypatch.setattr(shards_module.os, "replace", replace)
    ensemble(tmp_path)
    renames = [i for i, event in enumerate(events) if event.startswith("replace")]
    assert [events[i] for i in renames] == [
        "replace shard-000000.pt",
        "replace shard-000001.pt",
        "replace shard-000002.pt",
        "replace manifest.json",
    ]
    assert all(events[i - 1] == "fsync" for i in renames)  # the file's data reach the disk first


# --- corrupt and rerun ----------------------------------------------------------------------


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(300))


def _other_keys(path: Path) -> None:
    torch.save({"weights": torch.ones(3)}, path)


def _not_a_dict(path: Path) -> None:
    torch.save([1, 2, 3], path)


def _edit(change):
    """Load a good shard, change its contents (its settings kept), save it back."""

    def damage(path: Path) -> None:
        data = torch.load(path, weights_only=True)
        change(data)
        torch.save(data, path)

    return damage


def _rename_output(data):
    data["outputs"]["zs"] = data["outputs"].pop("ys")


def _fewer_samples(data):
    data["outputs"]["ys"] = data["outputs"]["ys"][:-1]


def _other_sample_shape(data):
    data["outputs"]["ys"] = data["outputs"]["ys"][:, :2]


def _other_range(data):
    data["start"] += 1


def _stats_not_numbers(data):
    data["stats"]["nfe"] = "many"


DAMAGE = {
    "empty": _empty,
    "truncated": _truncated,
    "garbage": _garbage,
    "other keys": _other_keys,
    "not a dict": _not_a_dict,
    "renamed output": _edit(_rename_output),
    "fewer samples": _edit(_fewer_samples),
    "other sample shape": _edit(_other_sample_shape),
    "other sample range": _edit(_other_range),
    "stats not numbers": _edit(_stats_not_numbers),
    "no config": _edit(lambda data: data.pop("config")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_shard_is_reported_by_name_and_computed_again(tmp_path, reference, damage):
    ensemble(tmp_path)
    path = shard_file(tmp_path, 1)
    DAMAGE[damage](path)
    with pytest.warns(DamagedFileWarning, match=re.escape(str(path))) as caught:
        resumed = ensemble(tmp_path)
    assert "computed again" in str(caught[0].message)
    assert resumed.computed == [1] and resumed.reused == [0, 2]
    assert_same(resumed, reference["ensemble"])
    assert no_warnings(lambda: ensemble(tmp_path)).computed == []  # the file was replaced


def test_a_damaged_sample_shard_is_computed_again(tmp_path, reference):
    samples(tmp_path)
    path = shard_file(tmp_path, 0)
    _edit(lambda data: data["outputs"].__setitem__("x", data["outputs"]["x"][:, :1]))(path)
    with pytest.warns(DamagedFileWarning, match="shape"):
        resumed = samples(tmp_path)
    assert resumed.computed == [0]
    assert_same(resumed, reference["samples"])


@pytest.mark.parametrize("damage", ["empty", "truncated", "not json", "no config"])
def test_a_damaged_manifest_is_reported_by_name_and_written_again(tmp_path, reference, damage):
    ensemble(tmp_path)
    manifest = tmp_path / ShardStore.MANIFEST
    text = manifest.read_text()
    manifest.write_text(
        {"empty": "", "truncated": text[:40], "not json": "\x00\x01", "no config": "[]"}[damage]
    )
    with pytest.warns(DamagedFileWarning, match=re.escape(str(manifest))):
        resumed = ensemble(tmp_path)
    assert resumed.computed == []
    assert_same(resumed, reference["ensemble"])
    assert json.loads(manifest.read_text())["stats"]["samples"] == N_PATHS


def test_a_rerun_that_computes_removes_the_stale_manifest_first(tmp_path):
    ensemble(tmp_path)
    shard_file(tmp_path, 2).unlink()

    def die(shard, computed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensemble(tmp_path, on_shard=die)
    # The manifest listed shard 2 as part of a finished run: it must not outlive the shard.
    assert not (tmp_path / ShardStore.MANIFEST).exists()


# --- other settings or data: refused, naming the difference --------------------------------


def _scaled_y0():
    return {"y0": Y0 * 2}


def _other_mu():
    return {"sde": GeometricBrownianMotion(mu=0.5, sigma=1.0)}


def _other_ts():
    return {"ts": torch.linspace(0, 2, 3, dtype=torch.float64)}


ENSEMBLE_CHANGES = {
    "y0 values": (_scaled_y0, r"y0 \(its values differ\)"),
    "SDE parameter": (_other_mu, r"\bsde \(its class, parameters"),
    "time points": (_other_ts, r"ts \(the time points differ\)"),
    "seed": (lambda: {"seed": 12}, r"seed \(11 there, 12 in this run\)"),
    "tolerance": (lambda: {"rtol": 2e-2}, r"options.rtol \(0.01 there, 0.02 in this run\)"),
    "fingerprint": (lambda: {"fingerprint": "v2"}, r"fingerprint \(None there, given"),
}


@pytest.mark.parametrize("change", sorted(ENSEMBLE_CHANGES))
def test_a_resumed_ensemble_with_other_data_is_refused_naming_it(tmp_path, change):
    ensemble(tmp_path)
    shard_file(tmp_path, 1).unlink()  # a lost shard: the rerun would compute it
    make, names = ENSEMBLE_CHANGES[change]
    with pytest.raises(ValueError, match="other settings") as caught:
        ensemble(tmp_path, **make())
    message = str(caught.value)
    assert re.search(names, message), message
    assert "another out directory" in message and f"delete {tmp_path}" in message
    assert "\n" not in message  # one paragraph
    assert not shard_file(tmp_path, 1).exists()  # nothing of the other problem was written


def _ring_of(radius):
    def make():
        sde = VPSDE()
        return {"score_fn": GaussianMixture.ring(radius=radius).score_fn(sde), "sde": sde}

    return make


def _other_code():
    sde = VPSDE()
    mixture = GaussianMixture.ring()
    return {"score_fn": lambda x, t: mixture.score(x, t, sde) * 0.5, "sde": sde}


def _other_beta():
    sde = VPSDE(beta_max=10.0)
    return {"sde": sde, "score_fn": GaussianMixture.ring().score_fn(VPSDE())}


class TinyModel(torch.nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((2,), scale))

    def forward(self, x, t):
        return -x * self.weight


def _model(scale):
    return lambda: {"score_fn": TinyModel(scale)}


SAMPLE_CHANGES = {
    "captured mixture": (_ring_of(2.0), r"score_fn \(its code, the values it captures"),
    "score code": (_other_code, r"score_fn \("),
    "forward SDE parameter": (_other_beta, r"\bsde \(its class, parameters"),
    "forward SDE class": (
        lambda: {"sde": SubVPSDE(), "score_fn": GaussianMixture.ring().score_fn(VPSDE())},
        r"sde_class \('VPSDE' there, 'SubVPSDE' in this run\)",
    ),
    "seed": (lambda: {"seed": 6}, r"seed \(5 there, 6 in this run\)"),
    "fingerprint": (lambda: {"fingerprint": b"other"}, r"fingerprint \(the fingerprint= values"),
}


@pytest.mark.parametrize("change", sorted(SAMPLE_CHANGES))
def test_resumed_sampling_with_another_score_or_sde_is_refused_naming_it(tmp_path, change):
    samples(tmp_path, fingerprint=b"mine")
    shard_file(tmp_path, 1).unlink()
    make, names = SAMPLE_CHANGES[change]
    with pytest.raises(ValueError, match="other settings") as caught:
        samples(tmp_path, **{"fingerprint": b"mine", **make()})
    assert re.search(names, str(caught.value)), str(caught.value)


def test_a_model_s_parameters_are_part_of_the_fingerprint(tmp_path):
    samples(tmp_path, score_fn=TinyModel(1.0))
    shard_file(tmp_path, 1).unlink()
    assert samples(tmp_path, score_fn=TinyModel(1.0)).computed == [1]  # same weights: resumes
    shard_file(tmp_path, 1).unlink()
    with pytest.raises(ValueError, match=r"score_fn \(its code, the values it captures"):
        samples(tmp_path, score_fn=TinyModel(0.5))


def test_a_manifest_of_another_run_is_refused_even_without_its_shards(tmp_path):
    ensemble(tmp_path)
    for path in tmp_path.glob("shard-*.pt"):
        path.unlink()
    with pytest.raises(ValueError, match=r"manifest.json was written by a run with other settings"):
        ensemble(tmp_path, seed=12)


def test_ranks_given_different_problems_all_refuse(monkeypatch):
    # Two ranks, simulated: rank 1 reports other y0 values through the collective.
    monkeypatch.setattr(run_module, "rank_and_size", lambda group=None: (0, 2))

    def all_gather_object(views, mine, group=None):
        error, message, config, missing = mine
        views[0] = mine
        views[1] = (error, message, {**config, "y0": digest(torch.zeros(1))}, missing)

    monkeypatch.setattr(run_module.dist, "all_gather_object", all_gather_object)
    work = lambda shard: ShardRecord({"x": torch.zeros(shard.size)}, {})  # noqa: E731
    with pytest.raises(ValueError, match=r"y0 \(its values differ\).*same arguments and data"):
        run_shards(work, 4, 2, {"y0": digest(torch.ones(1))})


def test_an_error_on_one_rank_stops_every_rank(monkeypatch):
    monkeypatch.setattr(run_module, "rank_and_size", lambda group=None: (0, 2))

    def all_gather_object(views, mine, group=None):
        views[0] = mine
        views[1] = ("ValueError", "shard-000001.pt was written by a run with other settings", {}, 0)

    monkeypatch.setattr(run_module.dist, "all_gather_object", all_gather_object)
    work = lambda shard: ShardRecord({"x": torch.zeros(shard.size)}, {})  # noqa: E731
    with pytest.raises(ValueError, match=r"rank 1 of the group stopped the run.*other settings"):
        run_shards(work, 4, 2, {})


# --- fingerprints ---------------------------------------------------------------------------


def test_digests_see_values_not_identities():
    assert digest(torch.ones(3)) == digest(torch.ones(3))
    assert digest(torch.ones(3)) != digest(torch.ones(3, dtype=torch.float64))
    assert digest(torch.ones(3)) != digest(torch.tensor([1.0, 1.0, 1.5]))
    assert digest(VPSDE()) == digest(VPSDE()) != digest(VPSDE(beta_min=0.2))
    assert digest(GBM_ITO.make_sde()) != digest(GeometricBrownianMotion(mu=1.0, sigma=0.5))
    assert digest(TinyModel(1.0)) == digest(TinyModel(1.0)) != digest(TinyModel(2.0))
    assert digest({"b": 1, "a": {3, 1}}) == digest({"a": {1, 3}, "b": 1})
    assert digest("cuda:0") == digest("cuda:1")  # each rank its own GPU
    assert digest(torch.device("cuda", 0)) == digest(torch.device("cuda", 1))


def test_a_function_s_digest_sees_its_code_captures_and_globals():
    def make(scale):
        return lambda x: x * scale

    assert digest(make(2.0)) == digest(make(2.0)) != digest(make(3.0))
    assert digest(lambda x: x + 1) != digest(lambda x: x + 2)
    global _OFFSET
    before = digest(_uses_a_global)
    _OFFSET = 2.0
    try:
        assert digest(_uses_a_global) != before
    finally:
        _OFFSET = 1.0


_OFFSET = 1.0
_LOG = logging.getLogger("tests.test_faults")


def _uses_a_global(x):
    return x + _OFFSET


def _logs(x):
    _LOG.debug("called")
    return x


def test_standard_library_objects_are_hashed_by_type_only():
    # A logger's handlers (or a lock, a file) differ between ranks and reruns, not the result.
    before = digest(_logs)
    handler = logging.NullHandler()
    _LOG.addHandler(handler)
    try:
        assert digest(_logs) == before
    finally:
        _LOG.removeHandler(handler)
    assert digest(argparse.Namespace(scale=1)) != digest(argparse.Namespace(scale=2))


def test_a_shard_store_refuses_records_it_could_not_read_back(tmp_path):
    store = ShardStore(tmp_path, {}, outputs={"x": (2,)})
    with pytest.raises(ValueError, match=r"not one to store.*outputs"):
        store.save(Shard(0, 0, 2), ShardRecord({"y": torch.zeros(2, 2)}, {}))
    with pytest.raises(ValueError, match=r"not one to store.*3 samples instead of 2"):
        store.save(Shard(0, 0, 2), ShardRecord({"x": torch.zeros(3, 2)}, {}))


# --- the jobs' arguments (hypothesis) -------------------------------------------------------

GOOD_FINGERPRINT = st.sampled_from([None, "v1", b"\x00v1", 7, -(2**70)])
GOOD = {
    "out": st.sampled_from([None, "DIR"]),
    "shard_size": st.integers(1, 9),
    "n_samples": st.integers(1, 9),
    "fingerprint": GOOD_FINGERPRINT,
    "seed": st.integers(0, 2**31),
    "gather": st.booleans(),
    "on_shard": st.sampled_from([None, lambda shard, computed: None]),
}
BAD = {
    "out": st.sampled_from([5, 1.5, b"dir", ["dir"], "", True, "FILE"]),
    "shard_size": st.sampled_from([0, -3, 1.5, "4", None, True]),
    "n_samples": st.sampled_from([0, -1, 2.0, "8", None, False]),
    "fingerprint": st.sampled_from([1.5, ["v1"], {"v": 1}, object(), True, (1, 2)]),
    "seed": st.sampled_from([1.5, "3", None, True]),
    "gather": st.sampled_from(["yes", 1, None]),
    "on_shard": st.sampled_from([5, "print"]),
}


def _call(job: str, arguments: dict):
    options = dict(arguments)
    n = options.pop("n_samples")
    if job == "ensemble":
        return solve_ensemble(GBM_ITO.make_sde(), torch.ones(1), TS, n, **options)
    sde = VPSDE()
    score_fn = GaussianMixture.ring().score_fn(sde)
    return sample_distributed(score_fn, sde, (2,), n, rtol=0.05, **options)


def _directory_values(arguments: dict, tmp_path_factory) -> dict:
    """Stand-ins made real: "DIR" a new directory, "FILE" a file where out expects one."""
    if arguments["out"] == "DIR":
        arguments["out"] = tmp_path_factory.mktemp("out")
    elif arguments["out"] == "FILE":
        arguments["out"] = tmp_path_factory.mktemp("out") / "a-file"
        arguments["out"].write_text("not a directory")
    return arguments


@settings(max_examples=25, deadline=None)
@given(job=st.sampled_from(["ensemble", "samples"]), data=st.data())
def test_job_arguments_run_or_are_refused_naming_one_of_the_bad(tmp_path_factory, job, data):
    bad = data.draw(st.sets(st.sampled_from(sorted(BAD)), max_size=3), label="bad")
    arguments = {
        name: data.draw((BAD if name in bad else GOOD)[name], label=name) for name in sorted(GOOD)
    }
    arguments = _directory_values(arguments, tmp_path_factory)
    if bad:
        with pytest.raises((ValueError, TypeError)) as caught:
            _call(job, arguments)
        message = str(caught.value)
        assert any(message.startswith(name) for name in bad), message
        return
    result = _call(job, arguments)
    assert result.stats["samples"] == arguments["n_samples"]
    if arguments["gather"]:
        assert all(torch.isfinite(v.double()).all() for v in result.outputs.values())
    else:
        assert result.outputs is None


@settings(max_examples=10, deadline=None)
@given(job=st.sampled_from(["ensemble", "samples"]), fingerprint=GOOD_FINGERPRINT)
def test_good_fingerprints_resume_and_others_refuse(tmp_path_factory, job, fingerprint):
    arguments = {"n_samples": 8, "shard_size": 4, "seed": 0, "out": "DIR"}
    arguments = _directory_values(arguments, tmp_path_factory)
    first = _call(job, {**arguments, "fingerprint": fingerprint})
    again = _call(job, {**arguments, "fingerprint": fingerprint})
    assert again.computed == [] and again.reused == first.computed
    with pytest.raises(ValueError, match=r"fingerprint \("):
        _call(job, {**arguments, "fingerprint": "another"})
