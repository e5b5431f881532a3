module github.com/gust-run/gust

go 1.26
