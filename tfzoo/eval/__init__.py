"""tfzoo.eval"""
