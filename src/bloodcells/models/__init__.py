"""The networks: the lab's two CNNs (cnn) and VGG16 (vgg), built by name (registry).

Nothing is imported here: `bloodcells models` reads the torch-free catalogue (specs) alone.
"""
