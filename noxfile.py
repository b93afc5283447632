"""nox sessions: `nox -s tests` (the whole suite), `nox -s unit` (fast, no root), `nox -s lint`."""
import nox

nox.options.sessions = ["unit", "lint"]


@nox.session
def tests(session):
    """Everything, including the network-namespace cluster (needs root) and vLLM's CPU build."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def unit(session):
    """Pure logic only: parsers, planner, config, metrics. Seconds, no root."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-m", "not cluster and not vllm", *session.posargs)


@nox.session
def lint(session):
    """ruff over the package, tasks and tests."""
    session.install("ruff")
    session.run("ruff", "check", "sparkops", "tasks.py", "tests", "noxfile.py")
