"""Class-conditional diffusion data per fold: the generator config, the diffusers UNet and samplers, its
trainer, the sample folders (manifest, classifier filter) and the CAS quality report.

Script: gen_synthetic.py.
"""
