"""Synthetic sequences with ground truth: the hand grasps an object, moves and rolls it, a static
camera watches; written as a bag in the INTERFACES.md layout plus a ground-truth sidecar."""
