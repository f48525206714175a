"""tfzoo.export"""
