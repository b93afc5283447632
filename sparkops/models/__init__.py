"""Models on the nodes: `download` into the head's Hugging Face cache, `sync` to the workers."""
