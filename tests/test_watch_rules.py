"""`inv watch`'s judgement from recorded samples (deploy/watch_rules.py) and vLLM's /metrics
parsed (apply/vllm_metrics.py, from a scrape of vLLM 0.32's CPU build)."""
from __future__ import annotations

from sparkops.apply.vllm_metrics import parse_metrics, per_engine
from sparkops.deploy.watch_rules import RestartPolicy, Verdict, judge

SCRAPE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smoke"} 2.0
vllm:num_requests_waiting{engine="0",model_name="smoke"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="smoke"} 0.125
vllm:generation_tokens_total{engine="0",model_name="smoke"} 4096.0
vllm:prompt_tokens_total{engine="0",model_name="smoke"} 9000.0
"""


def sample(t, running=0, tokens=100, problems=(), unreachable=()):
    return {"t": t, "problems": list(problems), "unreachable": list(unreachable),
            "metrics": {"running": running, "generation_tokens": tokens}}


def test_metrics_are_summed_over_engines_and_the_old_cache_name_is_read():
    m = parse_metrics(SCRAPE)
    assert m == {"running": 2.0, "waiting": 1.0, "kv_cache_usage": 0.125, "generation_tokens": 4096.0,
                 "prompt_tokens": 9000.0}
    two = parse_metrics(SCRAPE + SCRAPE.replace('engine="0"', 'engine="1"'))
    assert two["running"] == 4.0
    old = parse_metrics("vllm:gpu_cache_usage_perc{} 0.5\n")
    assert old["kv_cache_usage"] == 0.5 and old["running"] is None


def test_requests_per_engine_for_the_data_parallel_readiness():
    """One counter per replica and finish reason (vLLM 0.32 with --data-parallel-size 2)."""
    text = (SCRAPE + '# TYPE vllm:request_success_total counter\n'
            'vllm:request_success_total{engine="0",finished_reason="length",model_name="smoke"} 7.0\n'
            'vllm:request_success_total{engine="0",finished_reason="stop",model_name="smoke"} 2.0\n'
            'vllm:request_success_total{engine="1",finished_reason="length",model_name="smoke"} 0.0\n'
            'vllm:request_success_created{engine="1",finished_reason="length",model_name="smoke"} 1.7e9\n')
    assert per_engine(text, "vllm:request_success_total") == {0: 9.0, 1: 0.0}
    assert per_engine("vllm:request_success_total{model_name=\"m\"} 3.0\n", "vllm:request_success_total") == {0: 3.0}
    assert per_engine("garbage{engine=\"x\"} 1\n", "garbage") == {}


def test_idle_is_ok_and_running_without_tokens_is_stuck_after_the_stall_time():
    assert judge(sample(100, running=0), [sample(0, running=0)], 60) == Verdict("ok")
    history = [sample(0, running=2, tokens=500), sample(30, running=2, tokens=500)]
    assert judge(sample(50, running=2, tokens=500), history, 60).state == "ok"  # 50 s: not yet
    stuck = judge(sample(70, running=2, tokens=500), history, 60)
    assert stuck.state == "stuck" and "no token generated for 70s" in stuck.reasons[0]
    moving = [sample(0, running=2, tokens=500), sample(30, running=2, tokens=800)]
    assert judge(sample(70, running=2, tokens=800), moving, 60).state == "ok"  # stalled 40 s only


def test_problems_fail_and_the_policy_backs_off_caps_and_never_restarts_an_unreachable_node():
    failed = judge(sample(0, problems=["vllm is not running on spark-2"]), [], 60)
    assert failed == Verdict("failed", ("vllm is not running on spark-2",))
    policy = RestartPolicy(max_per_hour=2, backoff_s=(10.0, 30.0))
    assert policy.decide(failed, sample(0), [], 1000.0) == (True, "restart 1 this hour")
    go, why = policy.decide(failed, sample(0), [995.0], 1000.0)
    assert not go and "backing off" in why
    assert policy.decide(failed, sample(0), [980.0], 1000.0)[0]
    go, why = policy.decide(failed, sample(0), [100.0, 980.0], 1000.0)
    assert not go and "2 restarts in the last hour" in why
    go, why = policy.decide(failed, sample(0, unreachable=["spark-2"]), [], 1000.0)
    assert not go and "spark-2 cannot be reached" in why
    assert policy.decide(Verdict("ok"), sample(0), [], 1000.0) == (False, "whole")
