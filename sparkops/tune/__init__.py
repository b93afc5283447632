"""`inv tune`: search vLLM's settings for a profile on this cluster by measurement.

space (what may be searched) <- objective (scores, SLOs, when a lead is real) <- search (the
pure coordinate descent) <- tune (the verb: trials through `up` and `bench`'s sweep) and
write (--write into the local override).
"""
