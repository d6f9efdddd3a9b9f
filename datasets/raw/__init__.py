"""Raw Stanford Cars downloads: their files and layouts, read into annotations and image sources."""
