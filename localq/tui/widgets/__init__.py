"""Widgets the app's screens share: the top bar with the machine summary and the navigation."""
