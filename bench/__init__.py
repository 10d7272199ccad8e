"""`make bench`: the standard workload against blobflow and against a hand-written floor."""
