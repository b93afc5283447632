"""The software each runtime serves with: the docker runtime's image (`inv build`: built on
the head or pulled, the same image ID on every node) and the native runtime's virtualenv
(`inv install-vllm`: vLLM's CPU build, or vLLM offline from a folder of wheels)."""
