"""The toy data: procedural images of coloured shapes (``shapes``) written as a toy COCO and a toy ImageNet
(``generate``; command line: ``python -m src.tools.make_toy_coco``)."""
