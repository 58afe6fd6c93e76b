"""The headless core: targets, SSH, the mover client, progress, the fleet, the moves log, the
inventory and every sentence a user reads about a move. No Textual, no rich
(tests/test_import_hygiene.py checks it), so the CLI, the TUI and scripts share it."""
