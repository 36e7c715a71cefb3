"""Notebook 00, "Start here": a tour of the offline world (no paper).

Every notebook of the course trains on the same procedural world (the shared layer
``course_lib.world``), so that it runs offline, on a laptop, in minutes. The tour shows what
that world is before any paper uses it:

1. **The knobs.** ``WorldConfig`` holds every knob; a config and a split always render the same
   images, bit for bit. Twelve shape classes (``world.SHAPE_NAMES``) are drawn on backgrounds
   cut from the real photos and textures that scikit-image ships (the *stuff* kinds,
   ``world.STUFF_NAMES``).
2. **A gallery.** For every image the world knows its label, the boxes and labels of its
   objects and a templated caption (what 01 ALBEF trains on).
3. **Masks and stuff.** Instance masks and a per-pixel stuff map give the semantic map that the
   detection and segmentation notebooks use.
4. **Knobs at work.** Objects, occlusion, clutter and background contrast make images harder;
   ``imbalance`` makes classes rare, common or frequent (``world.frequency_tiers``); ``time``
   drifts hues, tints and the mix of backgrounds (continual learning).
5. **Play** with the drift in a widget (a static figure when headless), and **speed**: rendering
   is batched torch code and every split is cached under ``data/world/``.

The notebook's own code is its cells; this package holds only its parameters
(``experiment.PARAMS``: gallery image size, shape classes, images rendered for the speed
measurement).
"""
from __future__ import annotations

from .experiment import NOTEBOOK, PAPER_URL, PARAMS, TITLE

__all__ = ["NOTEBOOK", "PAPER_URL", "PARAMS", "TITLE"]
