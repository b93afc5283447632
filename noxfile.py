"""nox sessions. `nox` runs the quick ones (unit, lint, typecheck); `nox -s tests` runs everything.

    nox -s unit        the fast tier: pure logic and local processes (no slow, cluster or vllm tests)
    nox -s lint        ruff: errors, bugbear, import order, pyupgrade, line length 120
    nox -s typecheck   mypy over the package and tasks.py ([tool.mypy] in pyproject.toml)
    nox -s tests       the whole suite: the network-namespace cluster (root) and vLLM's CPU build

Arguments after `--` go to pytest: `nox -s unit -- -k sync -m "not timing"`.
"""
import nox

nox.options.sessions = ["unit", "lint", "typecheck"]
LINTED = ("sparkops", "tasks.py", "tests", "benchmarks", "data", "noxfile.py")


@nox.session
def tests(session):
    """Everything, including the network-namespace cluster (needs root) and vLLM's CPU build."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def unit(session):
    """The fast tier: no slow, cluster or vllm tests. Seconds, no root."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-m", "not slow and not cluster and not vllm", *session.posargs)


@nox.session
def lint(session):
    """ruff over the package, tasks, tests, benchmarks and data scripts."""
    session.install("-e", ".[test]")
    session.run("ruff", "check", *LINTED)


@nox.session
def typecheck(session):
    """mypy over the package and tasks.py, at the strictness set in pyproject.toml."""
    session.install("-e", ".[test]")
    session.run("mypy")
