"""People flagging: find images where not every person has garment masks, and review them.

- :mod:`workbench.people.detectors`: the detector interface, the inputs it sees and the registry;
- :mod:`~workbench.people.grounding_dino`, :mod:`~workbench.people.torchvision_rcnn`,
  :mod:`~workbench.people.opencv`, :mod:`~workbench.people.annotations`: the detectors;
- :mod:`~workbench.people.coverage`: how much of a proposed person the garment masks cover, and
  the image-level score;
- :mod:`~workbench.people.detect`: running a detector over a dataset (resumable, as a job);
- :mod:`~workbench.people.queue`: the review queue, decisions, and what the export reads.

Heavy libraries (cv2, torch, transformers) are imported inside the detectors that need them.
"""
