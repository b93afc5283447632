"""Running a plan on the nodes (`run`: each step on all its nodes at once, timeouts, undo on
failure or Ctrl-C), waiting until the API really serves (`ready`), and reading back what
`up` recorded on the head (`state`: run/state.json)."""
