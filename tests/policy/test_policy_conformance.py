"""Every shipped and test policy gives identical decisions on both CEL backends, and passes its cases.

Corpora: ``policies/`` with ``policies/tests/starter.cases.yaml``; the shared
benchmark policy (a verbatim copy of ``../shared/bench/policies/bench.yaml``,
so it runs where ``../shared`` is absent; a test keeps the copy identical when
it is present); the test policies in
``tests/policy/corpus/``. Error messages differ between engines; which rules
errored must not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celgate.policy import Decision, PolicySet, load_policies
from celgate.policy.backends import BACKENDS
from celgate.policy.cli import evaluate_case, main, read_cases

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORPORA = {
    "starter": (REPO / "policies", REPO / "policies" / "tests" / "starter.cases.yaml"),
    "bench": (HERE / "corpus" / "bench", HERE / "corpus" / "bench.cases.yaml"),
    "features": (HERE / "corpus" / "features", HERE / "corpus" / "features.cases.yaml"),
    "dry-run-set": (HERE / "corpus" / "dry-run-set", HERE / "corpus" / "dry-run-set.cases.yaml"),
    "wire": (HERE / "corpus" / "wire", HERE / "corpus" / "wire.cases.yaml"),
}


def corpus(name: str) -> tuple[Path, Path]:
    directory, cases = CORPORA[name]
    if not directory.is_dir():
        pytest.skip(f"{directory} is absent")
    return directory, cases


def summary(decision: Decision) -> tuple[Any, ...]:
    return (
        decision.point,
        decision.effect,
        decision.mode,
        decision.rule,
        decision.reason,
        decision.action,
        decision.matched,
        tuple(rule for rule, _ in decision.errors),
        decision.subject,
        decision.message,
    )


def test_the_bench_policy_copy_matches_the_shared_one() -> None:
    shared = REPO.parent / "shared" / "bench" / "policies" / "bench.yaml"
    if not shared.is_file():
        pytest.skip("../shared is absent")
    assert (HERE / "corpus" / "bench" / "bench.yaml").read_bytes() == shared.read_bytes()


def test_every_shipped_policy_directory_has_a_corpus() -> None:
    shipped = {p.parent for p in (REPO / "policies").glob("*.y*ml")}
    assert shipped <= {directory for directory, _ in CORPORA.values()}


@pytest.mark.parametrize("name", list(CORPORA))
def test_backends_agree(name: str) -> None:
    directory, cases_file = corpus(name)
    sets: dict[str, PolicySet] = {backend: load_policies(directory, backend, environ={}) for backend in BACKENDS}
    assert len({policy.version for policy in sets.values()}) == 1
    cases = read_cases(cases_file)
    assert cases
    for case in cases:
        decisions = {backend: evaluate_case(policy, case) for backend, policy in sets.items()}
        summaries = {backend: summary(decision) for backend, decision in decisions.items()}
        assert len(set(summaries.values())) == 1, (case["name"], summaries)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", list(CORPORA))
def test_cases_pass(name: str, backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    directory, cases_file = corpus(name)
    code = main(["test", str(directory), "--cases", str(cases_file), "--cel-backend", backend])
    assert code == 0, capsys.readouterr().out


@pytest.mark.parametrize("name", list(CORPORA))
def test_explain_agrees_with_decide(name: str) -> None:
    """Explain is the slow path of the same evaluator: same decisions with and without caches."""
    directory, cases_file = corpus(name)
    policy = load_policies(directory, environ={})
    for case in read_cases(cases_file) * 2:  # the second round runs on warm caches
        fast, slow = evaluate_case(policy, case), evaluate_case(policy, case, explain=True)
        assert summary(fast) == summary(slow), case["name"]
