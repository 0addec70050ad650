"""Losses shared by several models, one module per family: contrastive (CLIP/ITC), amc (AMC), boxes (box
regression), focal (GLIP), self_paced (SMCIM's sample weights). Import the module you need: the package
re-exports nothing, so a stage reading one family does not depend on the others' code (dvc.yaml's deps)."""
