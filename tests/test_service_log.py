"""Finding the cause in a failed service's log (pure), from vLLM's real failure shape."""
from sparkops.facts.service_log import cause, explain, hint

VLLM_CRASH = """\
(EngineCore pid=24) ERROR 11-26 18:49:30 [core.py:1512] RuntimeError: Worker failed with error 'InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx: (None, 'g++')
(APIServer pid=1) WARNING 11-26 18:37:04 [system_utils.py:255] Found ulimit of 20000. This can cause fd limit errors like `OSError: [Errno 24] Too many open files`.
(APIServer pid=1) ERROR 11-26 18:49:30 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
""" + "\n".join(f"(APIServer pid=1) INFO shutdown step {i}" for i in range(40))


def test_the_cause_above_the_shown_tail_is_named_with_its_fix():
    found = explain(VLLM_CRASH)
    assert len(found["log_tail"]) == 30
    assert found["details"] == ["cause, from its log: " + VLLM_CRASH.splitlines()[0].strip()[:300]]
    assert found["fix"] == "torch needs a C++ compiler on CPU: install g++"


def test_without_a_hint_the_first_exception_is_the_cause_not_a_warning():
    log = ("WARNING fd limit errors like `OSError: [Errno 24] Too many open files`\n"
           "(EngineCore pid=1) ERROR [core.py:1] ValueError: max_model_len 9000 is too big\n"
           "RuntimeError: Engine core initialization failed. See root cause above.\n")
    assert cause(log) == "ValueError: max_model_len 9000 is too big"
    assert hint(log) is None


def test_a_cause_already_in_the_tail_is_not_repeated():
    assert explain("ValueError: bad flag --no-such-flag\n")["details"] == []
