"""Trainers that run as separate processes (accelerate-launchable).

The ControlNet trainer, the init-from-Stable-Diffusion tool and the cloth segmenter live here;
they arrive with the export-and-training capability (see DESIGN.md, "Training").
"""
