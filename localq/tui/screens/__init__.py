"""The app's screens: one per section (Models, Discover, Downloads, Chat, Hardware) plus modals."""
