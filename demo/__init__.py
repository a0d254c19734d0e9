"""`make demo`: the whole pipeline end to end on this machine."""
