"""The contention study reproduces the AWS backoff-and-jitter result on a small sweep."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

from types import ModuleType

import pytest

from resilience import Backoff


def _load() -> ModuleType:
    """Import benchmarks/contention.py by path: `benchmarks` is not an installed package."""
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "contention.py"
    spec = importlib.util.spec_from_file_location("_contention_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


contention = _load()

NS = (1, 5, 20, 30)
SEEDS = 4


@pytest.fixture(name="rows", scope="module")
def _rows() -> dict[tuple[str, int], object]:
    return {(r.strategy, r.clients): r for r in contention.sweep(NS, SEEDS)}


class TestShape:
    @pytest.mark.parametrize("n", [20, 30])
    @pytest.mark.parametrize("jittered", ["full jitter", "decorrelated jitter", "equal jitter"])
    def test_no_jitter_does_more_work(self, rows, n, jittered):
        """With 20+ clients, no jitter makes more calls than a jittered strategy."""
        assert rows[("no jitter", n)].calls_mean > rows[(jittered, n)].calls_mean

    @pytest.mark.parametrize("n", [20, 30])
    @pytest.mark.parametrize("jittered", ["full jitter", "decorrelated jitter", "equal jitter"])
    def test_no_jitter_takes_longer(self, rows, n, jittered):
        """With 20+ clients, no jitter finishes later than a jittered strategy."""
        assert rows[("no jitter", n)].time_mean > rows[(jittered, n)].time_mean

    @pytest.mark.parametrize("n", [20, 30])
    def test_our_default_beats_no_jitter(self, rows, n):
        """Our default factor jitter does less work, sooner, than no jitter."""
        ours = rows[("ours: factor jitter 25% (default)", n)]
        assert rows[("no jitter", n)].calls_mean > ours.calls_mean
        assert rows[("no jitter", n)].time_mean > ours.time_mean

    def test_no_jitter_is_lockstep(self, rows):
        """Without jitter, one of the N lockstep clients wins per round: N(N+1)/2 calls."""
        for n in NS:
            assert n * (n + 1) / 2 == rows[("no jitter", n)].calls_mean

    def test_one_client_never_retries(self, rows):
        """A client alone succeeds on its first call, whatever the strategy."""
        for label in contention.STRATEGIES:
            assert 1 == rows[(label, 1)].calls_mean
            assert contention.CALL == rows[(label, 1)].time_mean

    def test_everyone_succeeds(self):
        """Every client writes once: there are at least N calls, and N-1 conflicts at least."""
        for backoff in contention.STRATEGIES.values():
            result = contention.simulate(backoff, 10, seed=3)
            assert result.calls >= 10 + 9


class TestDeterminism:
    def test_same_seed_same_result(self):
        """A seed gives the same calls and time on every run."""
        backoff = Backoff(base=0.5, max=10.0, jitter="full")
        first = contention.simulate(backoff, 25, seed=7)
        assert first == contention.simulate(backoff, 25, seed=7)

    def test_seeds_differ(self):
        """Different seeds give different runs (the randomness is really used)."""
        backoff = Backoff(base=0.5, max=10.0, strategy="decorrelated")
        results = {contention.simulate(backoff, 25, seed=s) for s in range(5)}
        assert len(results) > 1

    def test_sweep_is_reproducible(self):
        """Two sweeps over the same seeds agree row for row."""
        assert contention.sweep((5, 10), 2) == contention.sweep((5, 10), 2)


class TestOutput:
    def test_csv(self, tmp_path):
        """The CSV has a header and one row per strategy and N."""
        rows = contention.sweep((1, 5), 2)
        path = tmp_path / "contention.csv"
        contention.write_csv(rows, path)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert ",".join(contention.FIELDS) == lines[0]
        assert 1 + 2 * len(contention.STRATEGIES) == len(lines)
