"""tfzoo.layers"""
