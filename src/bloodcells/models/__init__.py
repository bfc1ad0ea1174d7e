"""The networks: the lab's two CNNs and VGG16, built by name from one registry."""
