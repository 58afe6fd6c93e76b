"""The Textual app: its screens, widgets, messages and styles, built on `tui.core`."""
