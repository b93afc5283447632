"""The deployment verbs: `up` (and `switch`, which is `up --replace`), `down`, `status`, `logs`."""
