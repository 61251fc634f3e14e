"""Coverage-guided fuzzing of the broker's parsers (atheris / libFuzzer).

    python -m fuzz                          # every harness, 60 s each
    python -m fuzz --target snp --seconds 300
    python -m fuzz --list

Harnesses live in ``fuzz.targets``; seeds come from the evidence folder at
run time (``BROKER_EVIDENCE_DIR``) and from inputs the harnesses generate.
"""
