"""Plumbing every layer uses: atomic files, devices and threads, folder locks, validation."""
