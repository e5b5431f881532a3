FROM python:3.11-slim
RUN echo from-dockerfile > /explore-df.txt
