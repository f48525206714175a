"""tfzoo.data"""
