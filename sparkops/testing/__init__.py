"""What the tests and benchmarks/ run against, never the product: the synthetic OpenAI server
(known timings, injected faults). Nothing else in sparkops imports from here
(tests/test_import_layers.py checks it)."""
