"""Constants shared by the data tests (imported by name: tests/ has no packages)."""

SIZE = 48  # px of the generated test images; small keeps generation well under a second
