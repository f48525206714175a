"""tfzoo.ops"""
