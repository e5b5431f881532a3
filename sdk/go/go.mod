module github.com/gust-run/gust/sdk/go

go 1.26
