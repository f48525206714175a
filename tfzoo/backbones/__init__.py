"""tfzoo.backbones"""
