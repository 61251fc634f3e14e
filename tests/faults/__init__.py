"""Fault injection: the broker under disk, crash, backend, clock and policy faults."""
