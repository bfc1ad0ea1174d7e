"""Turning folders of images into the lab layout: split and its manifest."""
