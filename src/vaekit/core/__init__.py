"""The bottom layer: errors, atomic file I/O, devices and random draws; imports no other
part of vaekit."""
