"""The retry concern: its face, state, driver and Redis twin side by side."""
